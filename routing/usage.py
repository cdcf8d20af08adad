"""Token usage as an upstream reports it, checked where it enters routerweb.

An upstream's `usage` object is untrusted input that ends up in a call row, a budget and the
rollups. `usage_parse` turns it into a `Usage` only when every count is an integer the call table
can hold (0 to 2**31 - 1, PostgreSQL's `integer`); anything else (a string, a float, a negative or
enormous count, a non-object) makes the usage count as missing, with the reason, so the call is
recorded with estimated tokens instead of failing to store.
"""

from dataclasses import dataclass
from typing import Any

import orjson

TOKENS_MAX = 2**31 - 1  # the largest count a token column holds

# routerweb's token estimate, for a call whose provider gave no usage and for count_tokens answered
# locally: a token per 4 characters, rounded up (OpenAI's rule of thumb), plus 4 per message and 3 per
# request for the framing.
CHARS_PER_TOKEN = 4
TOKENS_PER_MESSAGE = 4
TOKENS_PER_REQUEST = 3


@dataclass(frozen=True, slots=True)
class Usage:
    """Tokens of one call: `prompt` counts every input token (OpenAI's `prompt_tokens`); `cached` is
    the part of it read from the provider's cache and `cache_write` the part written to it (Anthropic's
    `cache_creation_input_tokens`, priced at the cache-write rate). `cached + cache_write <= prompt`."""

    prompt: int
    cached: int
    completion: int
    cache_write: int = 0


@dataclass(frozen=True, slots=True)
class UsageProblem:
    """Why an upstream's usage was not taken: a short reason fit for a call row (at most 40 characters)."""

    reason: str


def usage_parse(raw: Any) -> Usage | UsageProblem:
    """The usage in an upstream's `usage` object (OpenAI's shape), or why it cannot be used.

    `prompt_tokens` is required; `completion_tokens`, `prompt_tokens_details.cached_tokens` and
    `prompt_tokens_details.cache_write_tokens` (OpenRouter's, and routerweb's own for an Anthropic
    call) count as 0 when absent or null. Cache reads beyond the prompt are capped at the prompt, and
    cache writes at what is left of it.
    """
    if raw is None:
        return UsageProblem("no_usage")
    if not isinstance(raw, dict):
        return UsageProblem("invalid_usage")
    prompt = _count(raw.get("prompt_tokens"), required=True)
    if prompt is None:
        return UsageProblem("invalid_usage:prompt_tokens")
    completion = _count(raw.get("completion_tokens"))
    if completion is None:
        return UsageProblem("invalid_usage:completion_tokens")
    details = raw.get("prompt_tokens_details")
    if details is not None and not isinstance(details, dict):
        return UsageProblem("invalid_usage:prompt_tokens_details")
    cached = _count((details or {}).get("cached_tokens"))
    if cached is None:
        return UsageProblem("invalid_usage:cached_tokens")
    cache_write = _count((details or {}).get("cache_write_tokens"))
    if cache_write is None:
        return UsageProblem("invalid_usage:cache_write_tokens")
    cached = min(cached, prompt)
    return Usage(prompt=prompt, cached=cached, completion=completion, cache_write=min(cache_write, prompt - cached))


def anthropic_usage_parse(raw: Any) -> Usage | UsageProblem:
    """The usage in an Anthropic Messages API `usage` object, or why it cannot be used.

    Anthropic's `input_tokens` leaves out the cached tokens, so `prompt` is `input_tokens +
    cache_read_input_tokens + cache_creation_input_tokens` (OpenAI's `prompt_tokens`), `cached` the
    cache reads and `cache_write` the cache writes. `input_tokens` and `output_tokens` are required;
    the cache counts are 0 when absent or null. The sum must fit a token column too.
    """
    if raw is None:
        return UsageProblem("no_usage")
    if not isinstance(raw, dict):
        return UsageProblem("invalid_usage")
    counts = {}
    for name, required, label in _ANTHROPIC_COUNTS:
        count = _count(raw.get(name), required=required)
        if count is None:
            return UsageProblem(f"invalid_usage:{label}")
        counts[name] = count
    cached, cache_write = counts["cache_read_input_tokens"], counts["cache_creation_input_tokens"]
    prompt = counts["input_tokens"] + cached + cache_write
    if prompt > TOKENS_MAX:
        return UsageProblem("invalid_usage:prompt_tokens")
    return Usage(prompt=prompt, cached=cached, completion=counts["output_tokens"], cache_write=cache_write)


# (field, required, its name in a row's estimate reason: at most 26 characters)
_ANTHROPIC_COUNTS = (
    ("input_tokens", True, "input_tokens"),
    ("output_tokens", True, "output_tokens"),
    ("cache_read_input_tokens", False, "cache_read_tokens"),
    ("cache_creation_input_tokens", False, "cache_write_tokens"),
)


def usage_openai_fields(usage: Usage) -> dict[str, Any]:
    """`usage` as OpenAI's `usage` object; cache writes are `prompt_tokens_details.cache_write_tokens`
    (OpenRouter's name)."""
    return {
        "prompt_tokens": usage.prompt,
        "completion_tokens": usage.completion,
        "total_tokens": usage.prompt + usage.completion,
        "prompt_tokens_details": {"cached_tokens": usage.cached, "cache_write_tokens": usage.cache_write},
    }


def _count(value: Any, *, required: bool = False) -> int | None:
    """`value` as a token count, 0 when absent (unless required); None when it is not a valid count."""
    if value is None:
        return None if required else 0
    if type(value) is not int or not 0 <= value <= TOKENS_MAX:  # bool is an int subclass: refused too
        return None
    return value


def usage_with_cost(data: dict[str, Any], cost: str) -> bool:
    """Add `cost` (an exact decimal string, USD) to the `usage` object of an OpenAI answer or chunk as
    `usage.cost`, OpenRouter's field, written as a JSON number with every digit; False when there is
    no usage object to add it to."""
    usage = data.get("usage")
    if not isinstance(usage, dict):
        return False
    usage["cost"] = orjson.Fragment(cost)
    return True


def answer_with_cost(body: bytes, cost: str | None) -> bytes:
    """A non-streamed OpenAI answer (a JSON object, as the adapter checked) with `usage.cost` added; as
    it is when there is no cost or no usage object."""
    if cost is None:
        return body
    data = orjson.loads(body)
    return orjson.dumps(data) if usage_with_cost(data, cost) else body


# An embeddings answer ends with its `usage` object (OpenAI and the compatible servers put it last); only
# this many bytes of its end are searched, so the vectors before it are never parsed.
EMBEDDING_USAGE_TAIL = 4096


def embedding_usage_find(raw: bytes) -> tuple[Usage | UsageProblem, int | None]:
    """The usage of an embeddings answer, read from its tail without parsing the vectors, and the offset
    of the usage object's closing brace (where `embedding_answer_with_cost` adds the cost), or None.

    `prompt_tokens` (else `total_tokens`, which some servers send alone) is the input; a `total_tokens`
    below it is invalid. An embedding has no output: the usage is input tokens only.
    """
    tail_start = max(0, len(raw) - EMBEDDING_USAGE_TAIL)
    at = raw.rfind(b'"usage"', tail_start)
    start = raw.find(b"{", at) if at >= 0 else -1
    if start < 0 or raw[at + 7 : start].strip() != b":":
        return UsageProblem("no_usage"), None
    end = raw.find(b"}", start)
    while end >= 0:  # the first closing brace that ends a JSON object (details may nest one level)
        try:
            parsed = orjson.loads(raw[start : end + 1])
        except orjson.JSONDecodeError:
            end = raw.find(b"}", end + 1)
            continue
        return _embedding_usage(parsed), end
    return UsageProblem("invalid_usage"), None


def _embedding_usage(raw: Any) -> Usage | UsageProblem:
    if not isinstance(raw, dict):
        return UsageProblem("invalid_usage")
    given = raw.get("prompt_tokens")
    prompt = _count(given if given is not None else raw.get("total_tokens"), required=True)
    if prompt is None:
        return UsageProblem("invalid_usage:prompt_tokens")
    total = _count(raw.get("total_tokens"))
    if total is None or (raw.get("total_tokens") is not None and total < prompt):
        return UsageProblem("invalid_usage:total_tokens")
    return Usage(prompt=prompt, cached=0, completion=0)


def embedding_answer_with_cost(body: bytes, usage_end: int | None, cost: str | None) -> bytes:
    """An embeddings answer with `usage.cost` spliced in before the usage object's closing brace at
    `usage_end` (from `embedding_usage_find`): the vectors are copied, not parsed again."""
    if cost is None or usage_end is None:
        return body
    separator = b"" if body[:usage_end].rstrip().endswith(b"{") else b","
    return body[:usage_end] + separator + b'"cost":' + cost.encode() + body[usage_end:]


def tokens_estimate(text: str) -> int:
    """Tokens in `text` when the provider did not say (the rule above)."""
    return tokens_for_chars(len(text))


def tokens_for_chars(chars: int) -> int:
    """Tokens in a text of `chars` characters, by the same rule as `tokens_estimate`."""
    return -(-chars // CHARS_PER_TOKEN)


def prompt_tokens_estimate(messages: list[Any]) -> int:
    """Tokens in a request's messages: the text of each, plus the framing per message and per request."""
    total = TOKENS_PER_REQUEST
    for message in messages:
        if isinstance(message, dict):
            total += TOKENS_PER_MESSAGE + tokens_estimate(_message_text(message.get("content")))
    return total


def _message_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(part.get("text", "") for part in content if isinstance(part, dict))
    return ""
