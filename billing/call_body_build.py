"""What is stored of a call's body: the request and the answer, redacted and bounded for any database.

`call_body_build` turns an outcome's request and answer (routing/metering.py `CallOutcome`, which only
holds references) into the `body` of its call row, the dict the row writer stores as a `CallBody`.
Every string is redacted first (built-in patterns for API-key-like strings, plus
`ROUTERWEB_BODY_REDACT`), stripped of NUL characters (PostgreSQL refuses them in text and in jsonb),
and the request and the answer are each cut to `ROUTERWEB_BODY_MAX_BYTES` with a visible marker.
"""

import re
from functools import cache
from typing import Any

import orjson
from django.conf import settings

from routing.metering import CallOutcome

REDACTED = "[redacted]"
# API-key-like strings: OpenAI/Anthropic-style secret keys, routerweb's own keys, bearer tokens, AWS key ids.
REDACT_BUILT_IN = (
    r"\bsk-[A-Za-z0-9_\-]{8,}",
    r"\brw-[A-Za-z0-9_\-]{8,}",
    r"\b(?i:bearer)\s+[A-Za-z0-9._~+/=\-]{8,}",
    r"\bAKIA[0-9A-Z]{16}\b",
)
# Whatever a built-in pattern or a NUL could match starts with one of these, in JSON text: a value whose
# JSON has none of them and fits the limit is stored as it is, without walking it string by string.
# (Lowercase; substring tests, several times faster than one case-insensitive regular expression.)
REDACT_HINTS = (b"sk-", b"rw-", b"bearer", b"akia", b"\\u0000")
TRUNCATED = "[… truncated by routerweb: over {limit} bytes]"
DEPTH_MAX = 32  # deeper JSON is replaced by the marker (and never recursed into)
ITEM_BYTES = 8  # what each list item or dict entry counts against the limit besides its strings


@cache
def redaction() -> tuple[re.Pattern, ...]:
    """The built-in patterns and ROUTERWEB_BODY_REDACT, compiled once per process (each on its own:
    a configured pattern may carry global flags such as `(?i)`)."""
    return tuple(re.compile(pattern) for pattern in (*REDACT_BUILT_IN, *settings.ROUTERWEB_BODY_REDACT))


class Bounded:
    """Copies JSON values with every string redacted and NUL-free, within `limit` bytes of text in all."""

    def __init__(self, limit: int):
        self.limit = limit
        self.left = limit
        self.truncated = False

    @property
    def marker(self) -> str:
        return TRUNCATED.format(limit=self.limit)

    def text(self, value: str) -> str:
        for pattern in redaction():
            value = pattern.sub(REDACTED, value)
        if "\x00" in value:
            value = value.replace("\x00", "")
        size = len(value.encode("utf-8", "surrogatepass"))
        if size <= self.left:
            self.left -= size
            return value
        kept = value.encode("utf-8", "surrogatepass")[: max(self.left, 0)].decode("utf-8", "ignore")
        self.left = 0
        self.truncated = True
        return kept + self.marker

    def json(self, value: Any, depth: int = 0) -> Any:
        if isinstance(value, str):
            return self.text(value)
        if value is None or isinstance(value, bool | int | float):
            return value
        if depth >= DEPTH_MAX or self.left <= 0 or not isinstance(value, list | dict):
            self.truncated = True
            return self.marker
        if isinstance(value, list):
            items = []
            for item in value:
                if self.left <= 0:
                    items.append(self.marker)
                    self.truncated = True
                    break
                self.left -= ITEM_BYTES
                items.append(self.json(item, depth + 1))
            return items
        entries = {}
        for key, item in value.items():
            if self.left <= 0:
                entries["…"] = self.marker
                self.truncated = True
                break
            self.left -= ITEM_BYTES
            name = self.text(str(key))  # before the value, which may use up what is left
            entries[name] = self.json(item, depth + 1)
        return entries


def call_body_build(outcome: CallOutcome) -> dict[str, Any]:
    """The body to store for `outcome`: its request (messages and parameters) and its answer's text and
    tool calls, each of the request and the answer within ROUTERWEB_BODY_MAX_BYTES."""
    limit = settings.ROUTERWEB_BODY_MAX_BYTES
    request = outcome.request_body if isinstance(outcome.request_body, dict) else {}
    parameters = {name: value for name, value in request.items() if name != "messages"}
    asked = Bounded(limit)
    stored_request = {"messages": request.get("messages") or [], "parameters": parameters}
    if not _fits_as_is(stored_request, limit):
        stored_request = {"messages": asked.json(stored_request["messages"]), "parameters": asked.json(parameters)}
    text, tool_calls = _answer_parts(outcome)
    answered = Bounded(limit)
    answer = {"text": text, "tool_calls": tool_calls}
    if not _fits_as_is(answer, limit):
        answer = {"text": answered.text(text), "tool_calls": answered.json(tool_calls)}
    stored_tool_calls = answer["tool_calls"]
    return {
        "request": stored_request,
        "answer": answer["text"],
        "tool_calls": stored_tool_calls if isinstance(stored_tool_calls, list) else [stored_tool_calls],
        "request_truncated": asked.truncated,
        "answer_truncated": answered.truncated,
    }


def _fits_as_is(value: Any, limit: int) -> bool:
    """Whether `value` (JSON) can be stored as it is: within `limit` bytes as JSON, with nothing the
    built-in patterns could redact and no NUL (the common case, checked in one pass over its JSON).
    Configured patterns (ROUTERWEB_BODY_REDACT) are arbitrary: with any, every string is checked."""
    if len(redaction()) > len(REDACT_BUILT_IN):  # patterns are configured
        return False
    try:
        encoded = orjson.dumps(value)
    except TypeError:  # not JSON (a value no client can send): walked and bounded instead
        return False
    if len(encoded) > limit:
        return False
    lowered = encoded.lower()
    return not any(hint in lowered for hint in REDACT_HINTS)


def _answer_parts(outcome: CallOutcome) -> tuple[str, list]:
    """The answer's text and tool calls: a stream's as assembled, a completion's first choice's message.
    An embeddings answer has neither (its vectors, up to 128 MB, are not parsed here)."""
    if outcome.kind == "embeddings":
        return "", []
    if outcome.answer_text_parts is not None:
        return "".join(outcome.answer_text_parts), outcome.answer_tool_calls
    completion = outcome.answer
    if isinstance(completion, bytes | str):
        try:
            completion = orjson.loads(completion) if completion else None
        except orjson.JSONDecodeError:
            return "", []
    if isinstance(completion, dict) and isinstance(completion.get("content"), list):
        return _message_parts(completion["content"])
    if not isinstance(completion, dict) or not isinstance(completion.get("choices"), list):
        return "", []
    choice = completion["choices"][0] if completion["choices"] else None
    message = choice.get("message") if isinstance(choice, dict) else None
    if not isinstance(message, dict):
        return "", []
    content = message.get("content")
    tool_calls = message.get("tool_calls")
    return (content if isinstance(content, str) else ""), (tool_calls if isinstance(tool_calls, list) else [])


def _message_parts(blocks: list) -> tuple[str, list]:
    """An Anthropic message's (the /v1/messages answer's) text, and its tool_use blocks as they came."""
    text = "".join(
        b["text"] for b in blocks if isinstance(b, dict) and b.get("type") == "text" and isinstance(b.get("text"), str)
    )
    return text, [b for b in blocks if isinstance(b, dict) and b.get("type") == "tool_use"]
