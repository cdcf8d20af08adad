"""Pure cost arithmetic, in Decimal only.

Prices are USD per 1M tokens. `prompt_tokens` counts every input token, cached ones included (as
OpenAI reports it; for Anthropic it is input + cache reads + cache writes), so four token classes
are priced apart: the part read from the cache (`cached`) at the cached price, the part written to
it (`cache_write`, Anthropic's `cache_creation_input_tokens`) at the cache-write price, the rest of
the input at the input price, and the output at the output price:

    cost = (prompt - cached - cache_write) × input + cached × (cached price, or input when none)
           + cache_write × (cache-write price, or input when none) + completion × output
           ─────────────────────────────────────────────────────────────────────────────────────
                                               1,000,000
"""

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Protocol

PER_TOKENS = Decimal(1_000_000)

# What the request body does not show, added to its size by `prompt_tokens_bound`:
MEDIA_PART_TOKENS = 50_000  # per content part that is not text: an image is billed by its pixels, not its URL
TOOLS_FRAMING_TOKENS = 1024  # once when tools are offered: the tool-use instructions some providers prepend


@dataclass(frozen=True, slots=True)
class PriceSnap:
    """A price as the registry snapshot holds it (billing/metering.py); `id` is its `Price` row's."""

    effective_from: datetime
    input_per_mtok: Decimal
    output_per_mtok: Decimal
    cached_input_per_mtok: Decimal | None
    cache_write_per_mtok: Decimal | None = None
    id: int | None = None


class PriceLike(Protocol):
    input_per_mtok: Decimal
    output_per_mtok: Decimal
    cached_input_per_mtok: Decimal | None
    cache_write_per_mtok: Decimal | None


def price_cached_error(*, input_per_mtok: Decimal | None, cached_input_per_mtok: Decimal | None) -> str | None:
    """Why a cached-input price cannot go with this input price, or None (the admin and the registry file)."""
    if input_per_mtok is None or cached_input_per_mtok is None or input_per_mtok < 0:
        return None  # a missing or negative price has its own message
    if cached_input_per_mtok > input_per_mtok:
        return (
            f"The cached input price ({cached_input_per_mtok}) is above the input price ({input_per_mtok}): "
            "cached tokens are a discount on input tokens."
        )
    return None


def cost_for_usage(
    price: PriceLike, *, prompt_tokens: int, cached_tokens: int, completion_tokens: int, cache_write_tokens: int = 0
) -> Decimal:
    """The exact cost of a call; `cached_tokens` is the part of `prompt_tokens` read from the cache and
    `cache_write_tokens` the part written to it (neither can exceed what is left of the prompt)."""
    cached = min(cached_tokens, prompt_tokens)
    written = min(cache_write_tokens, prompt_tokens - cached)
    total = (
        (prompt_tokens - cached - written) * price.input_per_mtok
        + cached * _or_input(price.cached_input_per_mtok, price)
        + written * _or_input(price.cache_write_per_mtok, price)
        + completion_tokens * price.output_per_mtok
    )
    return total / PER_TOKENS


def _or_input(rate: Decimal | None, price: PriceLike) -> Decimal:
    return price.input_per_mtok if rate is None else rate


def prompt_tokens_bound(*, body: dict[str, Any], body_size: int) -> int:
    """At most how many prompt tokens any provider bills for `body`, a request `body_size` bytes of JSON long.

    Sound under one assumption: a token is at least one byte of UTF-8 text, as with byte-level BPE
    (OpenAI, Llama, Qwen, DeepSeek) and SentencePiece with byte fallback. Every string a provider
    tokenizes (message text, names, tool definitions, tool calls, schemas) is in the body, at least
    as long as its UTF-8 encoding once JSON-escaped; the quotes, keys and braces around a message
    (over 20 bytes) cover the few template tokens a provider adds per message. What the body does not
    show is added on top: `MEDIA_PART_TOKENS` per content part that is not text (an image is billed
    by its size, whatever its URL's length: the dearest known, gpt-4o-mini, bills a 2048 × 768 image
    in high detail as 48,169 tokens; Anthropic at most about 1,600), and `TOOLS_FRAMING_TOKENS` when
    the request offers tools. Not bounded: a file sent by reference (`file_id`), billed by the pages
    of a file routerweb never sees.

    Cheap by design (the body's size is known, only content parts are walked): it runs on every
    budgeted call. The estimate recorded for a call without usage is `prompt_tokens_estimate`.
    """
    bound = body_size
    messages = body.get("messages")
    for message in messages if isinstance(messages, list) else ():
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, list):
            bound += MEDIA_PART_TOKENS * sum(1 for part in content if _is_media(part))
    if body.get("tools") or body.get("functions"):
        bound += TOOLS_FRAMING_TOKENS
    return bound


def _is_media(part: Any) -> bool:
    return not (isinstance(part, dict) and part.get("type") in ("text", "refusal"))
