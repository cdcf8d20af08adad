"""The adapter for upstreams that speak Anthropic's Messages API (`api_format: anthropic`).

Requests are translated from OpenAI's chat completions and answers back (`anthropic_format.py`),
stream events become chat completion chunks (`anthropic_stream.py`). Errors have Anthropic's shape
`{"type": "error", "error": {"type", "message"}}` and are classified for fallback as for any
upstream (`ProviderAdapter.failure`): 529 (overloaded), 429 and 5xx move on to the next candidate,
other 4xx go back to the client.
"""

from typing import Any

import httpx
import orjson

from ..snapshot import ModelSnap, ProviderSnap
from ..streaming import DONE_EVENT, StreamRelay, sse_error_event
from ..upstream import UpstreamFailure
from ..usage import Usage, usage_with_cost
from .anthropic_format import ANTHROPIC_VERSION, anthropic_message_to_openai, openai_request_to_anthropic
from .anthropic_stream import AnthropicStreamMapper
from .base import JSON_HEADERS, SSE_HEADERS, Answer, ProviderAdapter, answer_object
from .openai_compat import error_fields_parse

VERSION_HEADER = (b"anthropic-version", ANTHROPIC_VERSION.encode())


class AnthropicAdapter(ProviderAdapter):
    api_format = "anthropic"
    label = "Anthropic Messages API"

    def url(self, base_url: str) -> str:
        return base_url + "/messages"

    def headers(self, api_key: str | None, *, stream: bool) -> list[tuple[bytes, bytes]]:
        headers = [*(SSE_HEADERS if stream else JSON_HEADERS), VERSION_HEADER]
        if api_key:
            headers.append((b"x-api-key", api_key.encode()))
        return headers

    def request_body(self, request: dict[str, Any], model: ModelSnap) -> bytes:
        body = openai_request_to_anthropic(
            request, upstream_model=model.upstream_model, model_max_tokens=model.max_output_tokens
        )
        return orjson.dumps(body)

    def answer(self, raw: bytes) -> Answer:
        parsed = answer_object(raw, list_field="content", what="a message")
        completion, usage = anthropic_message_to_openai(parsed)
        return Answer(orjson.dumps(completion), usage)

    def stream_relay(
        self, response: httpx.Response, provider: ProviderSnap, *, client_wants_usage: bool
    ) -> StreamRelay:
        return AnthropicStreamRelay(response, provider, client_wants_usage=client_wants_usage)

    def error_fields(self, raw: bytes, status: int) -> dict[str, str | None]:
        return error_fields_parse(raw, status)


class AnthropicStreamRelay(StreamRelay):
    """Messages API events in, chat completion chunks out; the usage chunk (with its cost) at the end
    when the client asked for it, then `[DONE]`. An `error` event before any content is a failure
    another candidate may answer; after it, the client gets an SSE error event and the stream ends."""

    def __init__(self, response: httpx.Response, provider: ProviderSnap, *, client_wants_usage: bool):
        super().__init__(response, provider, client_wants_usage=client_wants_usage)
        self.mapper = AnthropicStreamMapper()

    def relay_event(self, payload: bytes) -> bytes | None:
        try:
            event = orjson.loads(payload)
        except orjson.JSONDecodeError:
            if not self.started:
                raise UpstreamFailure("invalid JSON in stream", retryable=True) from None
            return None
        if not isinstance(event, dict):
            return None
        mapper = self.mapper
        chunks = mapper.chunks(event)
        if mapper.error is not None:
            return self._error_event(*mapper.error)
        out = []
        for chunk in chunks:
            self._note_chunk(chunk)
            out.append(b"data: " + orjson.dumps(chunk) + b"\n\n")
        if event.get("type") == "message_delta":
            self.usage = mapper.usage()
        if mapper.finished:
            self.finished = True
            out.append(self._usage_event() + DONE_EVENT)
        return b"".join(out) or None

    def _error_event(self, error_type: str, message: str) -> bytes:
        failure = UpstreamFailure(f"error event from upstream: {error_type}", retryable=True)
        if not self.started:
            raise failure
        self.failure, self.finished = failure, True
        return sse_error_event(f"upstream stream failed: {message}", code=error_type) + DONE_EVENT

    def _usage_event(self) -> bytes:
        if not self.client_wants_usage or type(self.usage) is not Usage:
            return b""
        chunk = self.mapper.usage_chunk(self.usage)
        if self.usage_cost is not None:
            cost = self.usage_cost(self.usage)
            if cost is not None:
                usage_with_cost(chunk, cost)
        return b"data: " + orjson.dumps(chunk) + b"\n\n"

    def _note_chunk(self, chunk: dict[str, Any]) -> None:
        choice = chunk["choices"][0]
        content = choice["delta"].get("content")
        self.note_model(chunk.get("model"))
        if choice["delta"].get("tool_calls"):
            self.note_not_text()
        if choice["finish_reason"]:
            self.note_finish(choice["finish_reason"])
        if content:
            self.note_text(content)
            self.note_started()
        elif choice["delta"].get("tool_calls") or choice["finish_reason"]:
            self.note_started()
