"""The adapter for upstreams that speak OpenAI's chat completions API (OpenAI, DeepSeek, Groq,
Ollama, vLLM, Together, ...): requests and answers pass through nearly as they are."""

from typing import Any

import httpx
import orjson

from ..snapshot import ModelSnap, ProviderSnap
from ..streaming import DONE_EVENT, StreamRelay
from ..text import text_bounded
from ..upstream import UpstreamFailure
from ..usage import Usage, embedding_usage_find, usage_parse, usage_with_cost
from .base import JSON_HEADERS, SSE_HEADERS, Answer, ProviderAdapter, answer_object

# An upstream's error fields reach the client, the call row (`code`) and the logs: strings only, bounded.
ERROR_FIELDS = ("type", "param", "code")
ERROR_MESSAGE_MAX = 500
ERROR_FIELD_MAX = 40
OUR_FIELDS = frozenset({"fallback_models"})  # request fields routerweb reads and the upstream must not see


class OpenAICompatAdapter(ProviderAdapter):
    api_format = "openai"
    label = "OpenAI-compatible chat completions"
    embeds = True

    def url(self, base_url: str) -> str:
        return base_url + "/chat/completions"

    def headers(self, api_key: str | None, *, stream: bool) -> list[tuple[bytes, bytes]]:
        headers = SSE_HEADERS if stream else JSON_HEADERS
        if api_key:
            headers = [*headers, (b"authorization", f"Bearer {api_key}".encode())]
        return headers

    def request_body(self, request: dict[str, Any], model: ModelSnap) -> bytes:
        body = {k: v for k, v in request.items() if k not in OUR_FIELDS}
        body["model"] = model.upstream_model
        if body.get("stream"):
            body["stream_options"] = {**(body.get("stream_options") or {}), "include_usage": True}
        return orjson.dumps(body)

    def answer(self, raw: bytes) -> Answer:
        parsed = answer_object(raw, list_field="choices", what="a chat completion")
        return Answer(raw, usage_parse(parsed.get("usage")))

    def embeddings_url(self, base_url: str) -> str:
        return base_url + "/embeddings"

    def embeddings_body(self, request: dict[str, Any], model: ModelSnap) -> bytes:
        body = {k: v for k, v in request.items() if k not in OUR_FIELDS}
        body["model"] = model.upstream_model
        return orjson.dumps(body)

    def embeddings_answer(self, raw: bytes) -> Answer:
        # The vectors are most of the body (megabytes for a batch) and go to the client as they are: only
        # the framing is checked and the usage read from the tail (routing/usage.py).
        head = raw[:64].lstrip()
        if not head.startswith(b"{") or not raw.rstrip().endswith(b"}") or b'"data"' not in raw:
            raise UpstreamFailure("upstream answer is not an embeddings list", retryable=True)
        usage, usage_end = embedding_usage_find(raw)
        return Answer(raw, usage, usage_end)

    def stream_relay(
        self, response: httpx.Response, provider: ProviderSnap, *, client_wants_usage: bool
    ) -> StreamRelay:
        return OpenAIStreamRelay(response, provider, client_wants_usage=client_wants_usage)

    def error_fields(self, raw: bytes, status: int) -> dict[str, str | None]:
        return error_fields_parse(raw, status)


def error_fields_parse(raw: bytes, status: int) -> dict[str, str | None]:
    """OpenAI's error fields from a body with an `error` object (OpenAI's shape, and Anthropic's
    `{"type": "error", "error": {"type", "message"}}`), else from the body's text."""
    try:
        parsed = orjson.loads(raw)
    except orjson.JSONDecodeError:
        parsed = None
    if isinstance(parsed, dict) and isinstance(parsed.get("error"), dict):
        error = parsed["error"]
        message = error_text(error.get("message"), ERROR_MESSAGE_MAX) or f"upstream answered {status}"
        return {"message": message, **{name: error_text(error.get(name), ERROR_FIELD_MAX) for name in ERROR_FIELDS}}
    text = error_text(raw.decode("utf-8", "replace").strip(), ERROR_MESSAGE_MAX) or f"upstream answered {status}"
    return {"message": text, "type": "invalid_request_error", "param": None, "code": None}


def error_text(value: object, max_length: int) -> str | None:
    """A string field of an upstream error: numbers as their text, anything else None; no NUL, cut to length."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    return text_bounded(value, max_length) or None


class OpenAIStreamRelay(StreamRelay):
    """Chat completion chunks pass through; the usage chunk is dropped when the client did not ask for it."""

    def relay_event(self, payload: bytes) -> bytes | None:
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
        self.note_model(event.get("model"))
        for choice in choices:
            if isinstance(choice, dict):
                self._note_choice(choice)
        if event.get("usage"):
            self.usage = usage_parse(event["usage"])
            if not self.client_wants_usage:
                if not choices:
                    return None
                del event["usage"]
                return b"data: " + orjson.dumps(event) + b"\n\n"
            if self.usage_cost is not None and type(self.usage) is Usage:
                cost = self.usage_cost(self.usage)
                if cost is not None and usage_with_cost(event, cost):
                    return b"data: " + orjson.dumps(event) + b"\n\n"
        return b"data: " + payload + b"\n\n"

    def _note_choice(self, choice: dict) -> None:
        """Note the text of one streamed choice and the first content; odd shapes carry no text."""
        delta = choice.get("delta")
        if not isinstance(delta, dict):
            delta = {}
        content = delta.get("content")
        if (
            choice.get("index", 0) != 0
            or delta.get("tool_calls")
            or content not in (None, "")
            and not isinstance(content, str)
        ):
            self.note_not_text()
        if choice.get("finish_reason") is not None:
            self.note_finish(choice["finish_reason"])
        if isinstance(content, str) and content:
            self.note_text(content)
            self.note_started()
        elif delta.get("tool_calls") or choice.get("finish_reason"):
            self.note_started()
        tool_calls = delta.get("tool_calls")
        if isinstance(tool_calls, list):
            self.note_tool_calls(tool_calls)
