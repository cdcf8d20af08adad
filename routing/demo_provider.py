"""The offline demo provider: a small OpenAI-compatible echo model that routerweb serves itself.

With `ROUTERWEB_DEMO_PROVIDER` on (`make run` turns it on in `.env`; it is off otherwise),
routerweb/asgi.py mounts this ASGI app under `/demo/v1/`, so that a fresh install answers from the
demo routes without any provider key. It is a product feature, not a test double: it takes no
directives, never hangs, fails or sleeps unboundedly, and answers like a real provider.

Contract:
- `POST /demo/v1/chat/completions` with an OpenAI chat body answers `Echo: ` and the words of the
  last user message, followed by a short note, cut to `min(max_completion_tokens or max_tokens,
  MAX_WORDS)` words (`DEFAULT_WORDS` when neither is given); one completion token per word. With
  `"stream": true` it streams one word per chunk, `CHUNK_DELAY_S` apart (at most
  `MAX_WORDS * CHUNK_DELAY_S` seconds in all), then a usage chunk when
  `stream_options.include_usage` is set, then `[DONE]`.
- `prompt_tokens` counts each message's words plus 3. The `model` field is echoed back as given and
  never interpreted. Ids are random (`chatcmpl-<32 hex>`) and `created` is the current time.
- A body over `MAX_BODY_BYTES` gets 413, one that is not a chat request 400, `GET /demo/v1/models`
  lists `demo-echo`; errors are in OpenAI's shape. Nothing here reads a key or touches the database.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from .errors import error_body

PREFIX = "/demo/v1"
MODEL_ID = "demo-echo"
DEFAULT_WORDS = 64
MAX_WORDS = 256
CHUNK_DELAY_S = 0.02
MAX_BODY_BYTES = 256 * 1024
NOTE = "(This is routerweb's offline demo model. Set a provider key, such as OPENAI_API_KEY, for real answers.)"

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

JSON_HEADERS = [(b"content-type", b"application/json"), (b"x-content-type-options", b"nosniff")]
SSE_HEADERS = [
    (b"content-type", b"text/event-stream"),
    (b"cache-control", b"no-cache"),
    (b"x-content-type-options", b"nosniff"),
]


class _BadRequest(Exception):
    def __init__(self, status: int, message: str, param: str | None = None):
        super().__init__(message)
        self.status, self.message, self.param = status, message, param


class DemoProvider:
    """The ASGI app; see the module docstring for what it answers."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path, method = scope["path"], scope["method"]
        try:
            if path == f"{PREFIX}/models" and method == "GET":
                data = [{"id": MODEL_ID, "object": "model", "created": 0, "owned_by": "routerweb-demo"}]
                return await _send_json(send, 200, orjson.dumps({"object": "list", "data": data}))
            if path != f"{PREFIX}/chat/completions":
                raise _BadRequest(404, f"Unknown demo provider path {path}.")
            if method != "POST":
                raise _BadRequest(405, "Use POST for chat completions.")
            request = _chat_request(await _read_body(scope, receive))
        except _BadRequest as error:
            body = error_body(error.message, status=error.status, param=error.param)
            return await _send_json(send, error.status, body)
        words = _answer_words(request)
        if request.get("stream"):
            return await _stream(send, request, words)
        await _send_json(send, 200, orjson.dumps(_completion(request, words)))


async def _read_body(scope: Scope, receive: Receive) -> bytes:
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _BadRequest(400, "The client went away.")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise _BadRequest(413, f"The request body is larger than {MAX_BODY_BYTES} bytes.")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _chat_request(body: bytes) -> dict[str, Any]:
    try:
        request = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise _BadRequest(400, "The body is not JSON.") from None
    if not isinstance(request, dict) or not isinstance(request.get("messages"), list) or not request["messages"]:
        raise _BadRequest(400, "'messages' must be a non-empty list.", param="messages")
    return request


def answer_length(request: dict[str, Any]) -> int:
    """How many words to answer: the request's token limit, at most MAX_WORDS (DEFAULT_WORDS without one)."""
    limit = request.get("max_completion_tokens") or request.get("max_tokens")
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
        return DEFAULT_WORDS
    return min(limit, MAX_WORDS)


def _answer_words(request: dict[str, Any]) -> list[str]:
    user_texts = [_text(m) for m in request["messages"] if isinstance(m, dict) and m.get("role") == "user"]
    words = ["Echo:", *(user_texts[-1] if user_texts else "").split()[:MAX_WORDS], *NOTE.split()]
    return words[: answer_length(request)]


def _text(message: dict[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return ""


def _usage(request: dict[str, Any], completion_tokens: int) -> dict[str, int]:
    messages = [m for m in request["messages"] if isinstance(m, dict)]
    prompt_tokens = sum(len(_text(m).split()) + 3 for m in messages)
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def _envelope(request: dict[str, Any], obj: str, completion_id: str) -> dict[str, Any]:
    return {"id": completion_id, "object": obj, "created": int(time.time()), "model": str(request.get("model", ""))}


def _completion(request: dict[str, Any], words: list[str]) -> dict[str, Any]:
    message = {"role": "assistant", "content": " ".join(words)}
    return {
        **_envelope(request, "chat.completion", _completion_id()),
        "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
        "usage": _usage(request, len(words)),
    }


async def _stream(send: Send, request: dict[str, Any], words: list[str]) -> None:
    completion_id = _completion_id()

    def event(choices: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
        body = {**_envelope(request, "chat.completion.chunk", completion_id), "choices": choices, **extra}
        return {"type": "http.response.body", "body": b"data: " + orjson.dumps(body) + b"\n\n", "more_body": True}

    await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
    await send(event([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]))
    for position, word in enumerate(words):
        await asyncio.sleep(CHUNK_DELAY_S)
        text = word if position == 0 else f" {word}"
        await send(event([{"index": 0, "delta": {"content": text}, "finish_reason": None}]))
    await send(event([{"index": 0, "delta": {}, "finish_reason": "stop"}]))
    options = request.get("stream_options")
    if isinstance(options, dict) and options.get("include_usage"):
        await send(event([], usage=_usage(request, len(words))))
    await send({"type": "http.response.body", "body": b"data: [DONE]\n\n"})


def _completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"


async def _send_json(send: Send, status: int, body: bytes) -> None:
    headers = [*JSON_HEADERS, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
