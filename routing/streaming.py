"""Relaying an upstream server-sent-event stream to the client, chunk by chunk.

The relay reads ahead only until the first content chunk (`prime`), so that a stream that fails or
ends before any content can still fall back to the next candidate; from then on each upstream read
is forwarded as soon as it arrives. What each event means is the API format's business: a provider
adapter subclasses `StreamRelay` with `relay_event`, which turns one upstream event into OpenAI
chunks for the client and notes the call's usage and text on the way.
"""

import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable
from typing import Protocol

import httpx
import orjson

from .snapshot import ProviderSnap
from .upstream import UpstreamFailure, transport_failure
from .usage import Usage, UsageProblem, usage_openai_fields

DONE_EVENT = b"data: [DONE]\n\n"
# Of a streamed answer's text, this many characters are kept (all of them are counted): enough for
# any record of the answer, while an endless stream cannot fill the worker's memory.
TEXT_KEPT_CHARS = 1 << 20
FINISH_REASON_MAX = 40
MODEL_NAME_MAX = 200
TOOL_NAME_KEPT_CHARS = 200
TOOL_CALLS_KEPT = 128


class SseParser:
    """Splits a byte stream into the `data` payloads of complete events."""

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, chunk: bytes) -> list[bytes]:
        buffer = self._buffer + chunk
        if b"\r" in buffer:
            buffer = buffer.replace(b"\r\n", b"\n")
        *events, self._buffer = buffer.split(b"\n\n")
        payloads = []
        for event in events:
            data = [line[5:].lstrip(b" ") for line in event.split(b"\n") if line.startswith(b"data:")]
            if data:
                payloads.append(b"\n".join(data))
        return payloads


def sse_error_event(message: str, code: str = "upstream_error") -> bytes:
    error = {"message": message, "type": "server_error", "param": None, "code": code}
    return b"data: " + orjson.dumps({"error": error}) + b"\n\n"


class ClientStream(Protocol):
    """What the gateway relays to a client and records (a `StreamRelay`, or a stream built on one):
    the client's bytes, and what the relay learned of the call on the way."""

    usage: "Usage | UsageProblem"
    failure: UpstreamFailure | None
    content_chunks: int
    text_chars: int
    first_content_at: float | None

    def __aiter__(self) -> AsyncIterator[bytes]: ...

    async def aclose(self) -> None: ...


class StreamRelay(ABC):
    """The client's side of one upstream stream. `usage` is the call's usage once the stream has given
    it (until then, and if it never does, a UsageProblem); `text_chars` counts the content relayed."""

    def __init__(self, response: httpx.Response, provider: ProviderSnap, *, client_wants_usage: bool):
        self.response = response
        self.provider = provider
        self.client_wants_usage = client_wants_usage
        self.usage: Usage | UsageProblem = UsageProblem("no_usage")
        self.text_parts: list[str] = []
        self.text_chars = 0  # every content character relayed, kept in `text_parts` or not
        # Tool calls by index as their deltas arrive: [id, type, name, argument parts].
        self._tool_calls: dict[int, list] = {}
        self._tool_chars = 0
        self.content_chunks = 0  # upstream events that carried content
        self.started = False  # a content chunk has been seen
        self.first_content_at: float | None = None
        self.finished = False  # [DONE] (or a clean end) was seen
        self.finish_reason: str | None = None  # of the (first) choice, as the upstream gave it
        self.text_only = True  # one choice, only text: `completion()` can rebuild the whole answer
        self.model_name = ""  # the model the upstream named in its chunks
        self.failure: UpstreamFailure | None = None
        # What the usage costs, for the usage chunk the client gets (`usage.cost`); set by the router.
        self.usage_cost: Callable[[Usage], str | None] | None = None
        self._chunks = response.aiter_raw()
        self._parser = SseParser()
        self._pending: list[bytes] = []

    async def prime(self) -> None:
        """Read until the first content chunk; raises UpstreamFailure if the stream fails or ends before it."""
        while not self.started:
            chunk = await self._read()
            if chunk is None:
                raise UpstreamFailure("stream ended before any content", retryable=True)
            self._pending.append(chunk)

    async def __aiter__(self):
        """Bytes for the client: what prime() read, then each upstream read as it arrives, then [DONE].

        A failure after the first byte cannot fall back any more: it ends the stream with an SSE error event.
        """
        pending, self._pending = b"".join(self._pending), []
        if pending:
            yield pending
        while not self.finished:
            try:
                chunk = await self._read()
            except UpstreamFailure as failure:
                self.failure = failure
                yield self.failure_bytes(f"upstream stream failed: {failure.reason}")
                return
            if chunk is None:
                yield self.end_bytes()
                return
            if chunk:
                yield chunk

    async def aclose(self) -> None:
        await self.response.aclose()

    def end_bytes(self) -> bytes:
        """What the client gets when the upstream stream ends without its own end event."""
        return DONE_EVENT

    def failure_bytes(self, message: str) -> bytes:
        """What ends the client's stream when the upstream fails after the first content."""
        return sse_error_event(message) + DONE_EVENT

    @property
    def text(self) -> str:
        return "".join(self.text_parts)

    async def _read(self) -> bytes | None:
        """The client bytes of the next upstream read ('' when it held no complete event); None at the end."""
        if self.finished:
            return None
        try:
            chunk = await anext(self._chunks)
        except StopAsyncIteration:
            self.finished = True
            return None
        except httpx.HTTPError as exc:
            raise transport_failure(exc, self.provider) from None
        out = [self.relay_event(payload) for payload in self._parser.feed(chunk)]
        return b"".join(event for event in out if event)

    @abstractmethod
    def relay_event(self, payload: bytes) -> bytes | None:
        """The client bytes (complete SSE events) for one upstream event's data, or None to send nothing.

        Calls `note_text` for content and `note_started` at the first content; sets `finished` at the
        stream's end and `usage` when the event carries it. Raises UpstreamFailure only before the
        first content (`started` false), when falling back is still possible.
        """

    def note_text(self, content: str) -> None:
        if self.text_chars < TEXT_KEPT_CHARS:
            self.text_parts.append(content[: TEXT_KEPT_CHARS - self.text_chars])
        self.text_chars += len(content)
        self.content_chunks += 1

    def note_finish(self, reason: object) -> None:
        """The choice's finish reason, when it is one OpenAI could give (a short name)."""
        if isinstance(reason, str) and reason.isidentifier() and len(reason) <= FINISH_REASON_MAX:
            self.finish_reason = reason

    def note_model(self, name: object) -> None:
        if not self.model_name and isinstance(name, str) and 0 < len(name) <= MODEL_NAME_MAX:
            self.model_name = name

    def note_not_text(self) -> None:
        """The stream carries more than one choice's text (tool calls, a second choice)."""
        self.text_only = False

    def completion(self) -> dict | None:
        """The streamed answer as one chat completion (for the response cache), when the stream reached
        its end cleanly with the whole text of one choice; else None."""
        if not (self.finished and self.failure is None and self.text_only and self.text_chars <= TEXT_KEPT_CHARS):
            return None
        if not isinstance(self.usage, Usage):
            return None
        message = {"role": "assistant", "content": self.text}
        return {
            "object": "chat.completion",
            "model": self.model_name,
            "choices": [{"index": 0, "message": message, "finish_reason": self.finish_reason}],
            "usage": usage_openai_fields(self.usage),
        }

    def note_tool_calls(self, deltas: list) -> None:
        """Note OpenAI tool call deltas (`index`, then `id`, `type`, `function.name` once and
        `function.arguments` in parts); up to TEXT_KEPT_CHARS characters of arguments are kept."""
        for delta in deltas:
            if not isinstance(delta, dict) or not isinstance(delta.get("index", 0), int):
                continue
            index = delta.get("index", 0)
            if index not in self._tool_calls and len(self._tool_calls) >= TOOL_CALLS_KEPT:
                continue
            call = self._tool_calls.setdefault(index, ["", "function", "", []])
            function = delta.get("function") if isinstance(delta.get("function"), dict) else {}
            for slot, value in ((0, delta.get("id")), (1, delta.get("type")), (2, function.get("name"))):
                if isinstance(value, str) and value:
                    call[slot] = value[:TOOL_NAME_KEPT_CHARS]
            arguments = function.get("arguments")
            if isinstance(arguments, str) and arguments and self._tool_chars < TEXT_KEPT_CHARS:
                call[3].append(arguments[: TEXT_KEPT_CHARS - self._tool_chars])
                self._tool_chars += len(arguments)

    def tool_calls(self) -> list[dict]:
        """The streamed answer's tool calls, assembled, in OpenAI's message form."""
        return [
            {"id": call_id, "type": kind, "function": {"name": name, "arguments": "".join(parts)}}
            for _, (call_id, kind, name, parts) in sorted(self._tool_calls.items())
        ]

    def note_started(self) -> None:
        if not self.started:
            self.started = True
            self.first_content_at = time.perf_counter()
