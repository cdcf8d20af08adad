"""Pure cost arithmetic, in Decimal only.

Prices are USD per 1M tokens. `prompt_tokens` counts every input token, cached ones included (as
OpenAI reports it), so the cached part is priced at the cached price and the rest at the input price:

    cost = (prompt - cached) × input + cached × (cached price, or input when none) + completion × output
           ─────────────────────────────────────────────────────────────────────────────────────────────
                                                  1,000,000
"""

import math
from decimal import Decimal
from typing import Any, Protocol

PER_TOKENS = Decimal(1_000_000)
CHARS_PER_TOKEN = 4
TOKENS_PER_MESSAGE = 4
TOKENS_PER_REQUEST = 3


class PriceLike(Protocol):
    input_per_mtok: Decimal
    output_per_mtok: Decimal
    cached_input_per_mtok: Decimal | None


def cost_for_usage(price: PriceLike, *, prompt_tokens: int, cached_tokens: int, completion_tokens: int) -> Decimal:
    """The exact cost of a call; `cached_tokens` is the part of `prompt_tokens` read from the cache."""
    cached = min(cached_tokens, prompt_tokens)
    cached_price = price.input_per_mtok if price.cached_input_per_mtok is None else price.cached_input_per_mtok
    total = (
        (prompt_tokens - cached) * price.input_per_mtok
        + cached * cached_price
        + completion_tokens * price.output_per_mtok
    )
    return total / PER_TOKENS


def tokens_estimate(text: str) -> int:
    """Tokens in `text` when the provider did not say: one per 4 characters, rounded up (OpenAI's rule of thumb)."""
    return tokens_for_chars(len(text))


def tokens_for_chars(chars: int) -> int:
    """Tokens in a text of `chars` characters, by the same rule as `tokens_estimate`."""
    return math.ceil(chars / CHARS_PER_TOKEN)


def prompt_tokens_estimate(messages: list[Any]) -> int:
    """Tokens in a request's messages: the text of each, plus 4 per message and 3 per request for the framing."""
    total = TOKENS_PER_REQUEST
    for message in messages:
        if not isinstance(message, dict):
            continue
        total += TOKENS_PER_MESSAGE + tokens_estimate(_message_text(message.get("content")))
    return total


def _message_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(part.get("text", "") for part in content if isinstance(part, dict))
    return ""
