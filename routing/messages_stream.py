"""Streams of /v1/messages: Anthropic's events for the client, from either kind of candidate.

- `TranslatedStream`: a chat completions candidate's relay (OpenAI chunks, usage included) turned
  into Anthropic's event sequence by `ChunkTranslator`: `message_start`, per block
  `content_block_start` / `content_block_delta` (`text_delta`, `input_json_delta`) /
  `content_block_stop`, then `message_delta` (stop reason and usage) and `message_stop`.
- `NativeMessagesRelay`: an Anthropic candidate's events passed through as they are, noting the
  usage (`message_start`, `message_delta`) and the text on the way.

Both keep what the gateway records (usage, text, first content, failure) as a `StreamRelay` does.
"""

import re
from typing import Any

import orjson

from .messages_format import sse_event, stop_reason, usage_fields
from .providers.anthropic_stream import anthropic_error_event
from .streaming import SseParser, StreamRelay
from .upstream import UpstreamFailure
from .usage import Usage, UsageProblem, anthropic_usage_parse

# An upstream's event name is repeated on the client's `event:` line: only a plain name is.
EVENT_NAME = re.compile(rb"[a-z_]{1,40}")
ERROR_MESSAGE_MAX = 500


def error_event(message: str, error_type: str = "api_error") -> bytes:
    """Anthropic's `error` event, which ends a stream that failed after it started."""
    return sse_event({"type": "error", "error": {"type": error_type, "message": message}})


class ChunkTranslator:
    """OpenAI chat completion chunks (their `data` payloads) in, Anthropic events out.

    Blocks follow the deltas: text opens a text block, each tool call (by its `index`) a tool_use
    block; a new kind of delta closes the open block first. The usage arrives with the last chunk,
    so `message_start` carries zero counts and `message_delta` the call's real ones.
    """

    def __init__(self, *, message_id: str, model: str):
        self.message_id = message_id
        self.model = model
        self.started = False
        self.ended = False
        self.block: tuple[str, int] | None = None
        self.index = -1
        self.stop_reason = "end_turn"

    def events(self, payload: bytes, usage: Usage | UsageProblem) -> list[bytes]:
        if self.ended:
            return []
        if payload == b"[DONE]":
            return self.finish(usage)
        try:
            chunk = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return []
        if not isinstance(chunk, dict):
            return []
        error = chunk.get("error")
        if isinstance(error, dict):
            self.ended = True
            message = error.get("message")
            return [error_event(message[:ERROR_MESSAGE_MAX] if isinstance(message, str) else "upstream error")]
        out = self._start(chunk.get("model"))
        choices = chunk.get("choices")
        choice = choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else {}
        delta = choice.get("delta") if isinstance(choice.get("delta"), dict) else {}
        content = delta.get("content")
        if isinstance(content, str) and content:
            if self.block != ("text", 0):
                out += self._open({"type": "text", "text": ""}, ("text", 0))
            out.append(self._delta({"type": "text_delta", "text": content}))
        calls = delta.get("tool_calls")
        for call in calls if isinstance(calls, list) else ():
            if isinstance(call, dict):
                out += self._tool_call_delta(call)
        if choice.get("finish_reason"):
            self.stop_reason = stop_reason(choice["finish_reason"])
        return out

    def finish(self, usage: Usage | UsageProblem) -> list[bytes]:
        """The closing events: the open block's stop, `message_delta` with the usage, `message_stop`."""
        out = self._start(None) + self._close()
        out.append(
            sse_event(
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": self.stop_reason, "stop_sequence": None},
                    "usage": usage_fields(usage),
                }
            )
        )
        out.append(sse_event({"type": "message_stop"}))
        self.ended = True
        return out

    def _start(self, model: Any) -> list[bytes]:
        if self.started:
            return []
        self.started = True
        message = {
            "id": self.message_id,
            "type": "message",
            "role": "assistant",
            "model": model if isinstance(model, str) else self.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": usage_fields(None),
        }
        return [sse_event({"type": "message_start", "message": message})]

    def _tool_call_delta(self, call: dict[str, Any]) -> list[bytes]:
        position = call.get("index") if type(call.get("index")) is int else 0
        function = call.get("function") if isinstance(call.get("function"), dict) else {}
        out = []
        if self.block != ("tool", position):
            call_id = call.get("id") if isinstance(call.get("id"), str) else f"toolu_{self.message_id}_{position}"
            name = function.get("name") if isinstance(function.get("name"), str) else ""
            out += self._open({"type": "tool_use", "id": call_id, "name": name, "input": {}}, ("tool", position))
        arguments = function.get("arguments")
        if isinstance(arguments, str) and arguments:
            out.append(self._delta({"type": "input_json_delta", "partial_json": arguments}))
        return out

    def _open(self, block: dict[str, Any], key: tuple[str, int]) -> list[bytes]:
        out = self._close()
        self.index += 1
        self.block = key
        out.append(sse_event({"type": "content_block_start", "index": self.index, "content_block": block}))
        return out

    def _close(self) -> list[bytes]:
        if self.block is None:
            return []
        self.block = None
        return [sse_event({"type": "content_block_stop", "index": self.index})]

    def _delta(self, delta: dict[str, Any]) -> bytes:
        return sse_event({"type": "content_block_delta", "index": self.index, "delta": delta})


class TranslatedStream:
    """A chat completions relay (primed, usage included) as Anthropic events for the client."""

    def __init__(self, relay: StreamRelay, translator: ChunkTranslator):
        self.relay = relay
        self.translator = translator

    @property
    def usage(self) -> Usage | UsageProblem:
        return self.relay.usage

    @property
    def failure(self) -> UpstreamFailure | None:
        return self.relay.failure

    @property
    def content_chunks(self) -> int:
        return self.relay.content_chunks

    @property
    def text_chars(self) -> int:
        return self.relay.text_chars

    @property
    def first_content_at(self) -> float | None:
        return self.relay.first_content_at

    @property
    def text_parts(self) -> list[str]:
        return self.relay.text_parts

    def tool_calls(self) -> list[dict]:
        return self.relay.tool_calls()

    async def __aiter__(self):
        parser, chunks = SseParser(), aiter(self.relay)
        try:
            async for chunk in chunks:
                out = [
                    event
                    for payload in parser.feed(chunk)
                    for event in self.translator.events(payload, self.relay.usage)
                ]
                if out:
                    yield b"".join(out)
        finally:
            await chunks.aclose()

    async def aclose(self) -> None:
        await self.relay.aclose()


class NativeMessagesRelay(StreamRelay):
    """An Anthropic upstream's events, relayed as they are (unknown event types included, under a
    plain name); usage from `message_start` and `message_delta`, text from `text_delta`s.

    An `error` event before the first delta fails the try (the next candidate may answer; Anthropic
    may send `message_start` and an empty block before it is overloaded); a later one is relayed and
    the call recorded as a failed stream.
    """

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._usage_raw: dict[str, Any] = {}
        self._stopped = False

    def relay_event(self, payload: bytes) -> bytes | None:
        try:
            event = orjson.loads(payload)
        except orjson.JSONDecodeError:
            event = None
        kind = event.get("type") if isinstance(event, dict) else None
        if not isinstance(kind, str) or not EVENT_NAME.fullmatch(kind.encode()):
            if not self.started:
                raise UpstreamFailure("invalid event in stream", retryable=True)
            return None
        if kind == "error":
            error_type, _ = anthropic_error_event(event)
            failure = UpstreamFailure(f"error event from upstream ({error_type})", retryable=True)
            if not self.started:
                raise failure
            self.failure, self.finished = failure, True
        elif kind == "message_start":
            message = event.get("message")
            self._note_usage(message.get("usage") if isinstance(message, dict) else None)
        elif kind == "content_block_delta":
            delta = event.get("delta")
            if isinstance(delta, dict) and delta.get("type") == "text_delta" and isinstance(delta.get("text"), str):
                self.note_text(delta["text"])
            self.note_started()
        elif kind == "message_delta":  # an answer without content is still an answer
            self._note_usage(event.get("usage"))
            self.note_started()
        elif kind == "message_stop":
            self._stopped = self.finished = True
        return b"event: " + kind.encode() + b"\ndata: " + payload + b"\n\n"

    def _note_usage(self, usage: Any) -> None:
        """Usage counts are cumulative: a `message_delta`'s replace the `message_start`'s it carries."""
        if isinstance(usage, dict):
            self._usage_raw.update((name, value) for name, value in usage.items() if value is not None)
            self.usage = anthropic_usage_parse(self._usage_raw)

    def end_bytes(self) -> bytes:
        if self._stopped:
            return b""
        self.failure = UpstreamFailure("stream ended before message_stop", retryable=True)
        return error_event("The upstream stream ended before its message_stop.")

    def failure_bytes(self, message: str) -> bytes:
        return error_event(message)
