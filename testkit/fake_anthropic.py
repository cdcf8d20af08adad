"""The fake upstream's Anthropic mode: the wire format of Anthropic's Messages API (a test double).

`testkit/fake_upstream.py` serves ``POST {prefix}/messages`` with these pieces; the directives of
the model string work as in its OpenAI mode (``status``, ``retry-after``, ``hang``, ``malformed``,
``latency``, ``chunk-delay``, ``words``, ``drop``, ``empty-stream``, ``nousage``, ``cached``,
``dense``, ``flaky``), plus the Anthropic-only ones listed in that module's docstring.

What a real Messages API does and this fake does too:

- headers: neither ``x-api-key`` nor ``Authorization: Bearer`` (what the ``anthropic`` SDK 2.x
  sends) -> 401 ``authentication_error``; no ``anthropic-version`` -> 400.
- body: ``model`` (string), ``messages`` (list) and ``max_tokens`` (positive integer) are
  required, ``system`` is a string or a list of text blocks; otherwise 400.
- errors: ``{"type": "error", "error": {"type": "overloaded_error", "message": ...}}`` with the
  type that goes with the status (529 ``overloaded_error``, 429 ``rate_limit_error``, ...).
- usage: ``input_tokens`` (the uncached prompt), ``cache_creation_input_tokens``,
  ``cache_read_input_tokens``, ``output_tokens``. ``input_tokens`` follows the OpenAI mode's
  prompt rule over the system prompt (as one message) and the messages; the two cache counts come
  from the ``cache-write=W`` and ``cached=R`` directives, on top of it.
- the answer: ``Echo:`` and the last user message's text (text blocks and tool results), as in
  the OpenAI mode, cut to ``max_tokens`` words (then ``stop_reason`` is ``max_tokens``); with
  ``tool-use`` it calls the request's first tool after the text (``stop_reason`` ``tool_use``).
- the stream: ``message_start`` (usage with the input counts and ``output_tokens`` 1),
  ``content_block_start``, ``ping``, ``content_block_delta`` (``text_delta`` per word,
  ``input_json_delta`` in pieces for a tool's input), ``content_block_stop``, ``message_delta``
  (``stop_reason`` and the final ``usage.output_tokens``), ``message_stop``.
"""

from __future__ import annotations

import json
from typing import Any

_dumps = json.JSONEncoder(separators=(",", ":")).encode

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}
BAD_USAGE_VALUES: dict[str, Any] = {
    "negative": -5,
    "huge": 2**40,
    "string": "12",
    "float": 3.5,
    "null": None,
    "bool": True,
}
ODD_EVENTS = (
    b'event: mystery\ndata: {"type":"mystery","detail":"a future event type"}\n\n',
    b'event: content_block_start\ndata: {"type":"content_block_start","index":7,'
    b'"content_block":{"type":"mystery_block"}}\n\n',
    b'event: content_block_delta\ndata: {"type":"content_block_delta","index":7,'
    b'"delta":{"type":"mystery_delta","value":"\\u0000"}}\n\n',
    b'event: content_block_stop\ndata: {"type":"content_block_stop","index":7}\n\n',
)


def error_type(status: int) -> str:
    """Anthropic's error type for an HTTP status."""
    return ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")


def error_body(status: int, message: str) -> bytes:
    """Anthropic's error shape as compact JSON bytes."""
    return _dumps({"type": "error", "error": {"type": error_type(status), "message": message}}).encode()


def error_event(status: int, message: str) -> bytes:
    """An ``error`` event of a stream, as Anthropic sends it mid-stream (e.g. when overloaded)."""
    return sse_event("error", {"type": "error", "error": {"type": error_type(status), "message": message}})


def sse_event(name: str, data: dict[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + _dumps(data).encode() + b"\n\n"


def request_problem(request: Any, headers: dict[str, str]) -> tuple[int, bytes] | None:
    """(status, Anthropic error body) when the headers or body would be refused, else None."""
    if not headers.get("x-api-key") and not headers.get("authorization", "").startswith("Bearer "):
        return 401, error_body(401, "x-api-key header is required")
    if not headers.get("anthropic-version"):
        return 400, error_body(400, "anthropic-version: header is required")
    if not isinstance(request, dict):
        return 400, error_body(400, "The request body must be a JSON object.")
    if not isinstance(request.get("model"), str) or not request["model"]:
        return 400, error_body(400, "model: Field required")
    if not isinstance(request.get("messages"), list):
        return 400, error_body(400, "messages: Field required")
    max_tokens = request.get("max_tokens")
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        return 400, error_body(400, "max_tokens: Field required (a positive integer)")
    system = request.get("system")
    if system is not None and not isinstance(system, (str, list)):
        return 400, error_body(400, "system: Input should be a valid string or list of text blocks")
    return None


def _block_text(block: Any) -> str:
    if not isinstance(block, dict):
        return ""
    if isinstance(block.get("text"), str):
        return block["text"]
    if block.get("type") == "tool_result":
        return _content_text(block.get("content"))
    return ""


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(text for text in map(_block_text, content) if text)
    return ""


def text_messages(request: dict[str, Any]) -> list[dict[str, str]]:
    """The request as plain ``{"role", "content"}`` texts (the system prompt first, when there is
    one), for the OpenAI mode's token and answer rules."""
    messages = []
    system = _content_text(request.get("system"))
    if system:
        messages.append({"role": "system", "content": system})
    for message in request["messages"]:
        if isinstance(message, dict):
            messages.append({"role": str(message.get("role")), "content": _content_text(message.get("content"))})
    return messages


def usage(input_tokens: int, output_tokens: int, *, cache_write: int, cache_read: int, bad: str) -> dict[str, Any]:
    """The usage object; with ``bad`` set, every count is replaced by that kind of hostile value."""
    counts = {
        "input_tokens": input_tokens,
        "cache_creation_input_tokens": cache_write,
        "cache_read_input_tokens": cache_read,
        "output_tokens": output_tokens,
    }
    if bad:
        return dict.fromkeys(counts, BAD_USAGE_VALUES[bad])
    return counts


def tool_call(request: dict[str, Any], call_id: str, answer_text: str) -> dict[str, Any] | None:
    """A ``tool_use`` block calling the request's first tool, or None when it has none."""
    tools = request.get("tools")
    if not isinstance(tools, list) or not tools or not isinstance(tools[0], dict):
        return None
    name = tools[0].get("name")
    return {
        "type": "tool_use",
        "id": call_id,
        "name": name if isinstance(name, str) else "tool",
        "input": {"echo": answer_text},
    }


def stop_reason(*, cut: bool, tool: dict[str, Any] | None) -> str:
    if cut:
        return "max_tokens"
    return "tool_use" if tool else "end_turn"


def message_body(
    *, message_id: str, model: str, text: str, tool: dict[str, Any] | None, reason: str, usage: dict[str, Any] | None
) -> bytes:
    """A non-streamed Messages API answer."""
    content: list[dict[str, Any]] = [{"type": "text", "text": text}] if text or not tool else []
    if tool:
        content.append(tool)
    message: dict[str, Any] = {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": reason,
        "stop_sequence": None,
    }
    if usage is not None:
        message["usage"] = usage
    return _dumps(message).encode()


def stream_head(*, message_id: str, model: str, usage: dict[str, Any] | None) -> bytes:
    """``message_start`` (its usage: the input counts and ``output_tokens`` 1, as Anthropic sends),
    the text block's ``content_block_start`` and a ``ping``."""
    message: dict[str, Any] = {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
    }
    if usage is not None:
        message["usage"] = usage
    return (
        sse_event("message_start", {"type": "message_start", "message": message})
        + sse_event(
            "content_block_start",
            {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        )
        + sse_event("ping", {"type": "ping"})
    )


def text_delta(piece: str) -> bytes:
    return sse_event(
        "content_block_delta",
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": piece}},
    )


def tool_events(tool: dict[str, Any]) -> bytes:
    """Close the text block, then the tool_use block with its input in three ``input_json_delta`` pieces."""
    arguments = _dumps(tool["input"])
    third = max(1, len(arguments) // 3)
    pieces = [arguments[:third], arguments[third : 2 * third], arguments[2 * third :]]
    start = {"type": "content_block_start", "index": 1, "content_block": {**tool, "input": {}}}
    return (
        sse_event("content_block_stop", {"type": "content_block_stop", "index": 0})
        + sse_event("content_block_start", start)
        + b"".join(
            sse_event(
                "content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": 1,
                    "delta": {"type": "input_json_delta", "partial_json": piece},
                },
            )
            for piece in pieces
        )
        + sse_event("content_block_stop", {"type": "content_block_stop", "index": 1})
    )


def stream_tail(*, tool: dict[str, Any] | None, reason: str, usage: dict[str, Any] | None, odd: bool) -> bytes:
    """The events after the last text delta: the blocks' stops, ``message_delta``, ``message_stop``."""
    blocks = tool_events(tool) if tool else sse_event("content_block_stop", {"type": "content_block_stop", "index": 0})
    delta: dict[str, Any] = {"type": "message_delta", "delta": {"stop_reason": reason, "stop_sequence": None}}
    if usage is not None:
        delta["usage"] = {"output_tokens": usage["output_tokens"]}
    return (
        (b"".join(ODD_EVENTS) if odd else b"")
        + blocks
        + sse_event("message_delta", delta)
        + sse_event("message_stop", {"type": "message_stop"})
    )
