"""Relaying an upstream server-sent-event stream to the client, chunk by chunk.

The relay reads ahead only until the first content chunk (`prime`), so that a stream that fails or
ends before any content can still fall back to the next candidate; from then on each upstream read
is forwarded as soon as it arrives. On the way it notes the usage chunk and the streamed text, which
the cost row needs, and drops the usage chunk when the client did not ask for it.
"""

import time

import httpx
import orjson

from .registry import ProviderSnap
from .upstream import UpstreamFailure, transport_failure

DONE_EVENT = b"data: [DONE]\n\n"
# Of a streamed answer's text, this many characters are kept (all of them are counted): enough for
# any record of the answer, while an endless stream cannot fill the worker's memory.
TEXT_KEPT_CHARS = 1 << 20


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


class StreamRelay:
    def __init__(self, response: httpx.Response, provider: ProviderSnap, *, client_wants_usage: bool):
        self.response = response
        self.provider = provider
        self.client_wants_usage = client_wants_usage
        self.usage: dict | None = None
        self.text_parts: list[str] = []
        self.text_chars = 0  # every content character relayed, kept in `text_parts` or not
        self.started = False  # a content chunk has been seen
        self.first_content_at: float | None = None
        self.finished = False  # [DONE] (or a clean end) was seen
        self.failure: UpstreamFailure | None = None
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
                yield sse_error_event(f"upstream stream failed: {failure.reason}") + DONE_EVENT
                return
            if chunk is None:
                yield DONE_EVENT
                return
            if chunk:
                yield chunk

    async def aclose(self) -> None:
        await self.response.aclose()

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
        out = [self._relay_event(payload) for payload in self._parser.feed(chunk)]
        return b"".join(event for event in out if event)

    def _relay_event(self, payload: bytes) -> bytes | None:
        if payload == b"[DONE]":
            self.finished = True
            return DONE_EVENT if self.started else None
        try:
            event = orjson.loads(payload)
        except orjson.JSONDecodeError:
            if not self.started:
                raise UpstreamFailure("invalid JSON in stream", retryable=True) from None
            return b"data: " + payload + b"\n\n"
        if not isinstance(event, dict):
            return b"data: " + payload + b"\n\n"
        choices = event.get("choices")
        if not isinstance(choices, list):
            choices = []
        for choice in choices:
            if isinstance(choice, dict):
                self._note_choice(choice)
        if event.get("usage"):
            self.usage = event["usage"]
            if not self.client_wants_usage:
                if not choices:
                    return None
                del event["usage"]
                return b"data: " + orjson.dumps(event) + b"\n\n"
        return b"data: " + payload + b"\n\n"

    def _note_choice(self, choice: dict) -> None:
        """Keep the text of one streamed choice and note the first content; odd shapes carry no text."""
        delta = choice.get("delta")
        if not isinstance(delta, dict):
            delta = {}
        content = delta.get("content")
        if not isinstance(content, str):
            content = ""
        if content:
            if self.text_chars < TEXT_KEPT_CHARS:
                self.text_parts.append(content[: TEXT_KEPT_CHARS - self.text_chars])
            self.text_chars += len(content)
        if not self.started and (content or delta.get("tool_calls") or choice.get("finish_reason")):
            self.started = True
            self.first_content_at = time.perf_counter()
