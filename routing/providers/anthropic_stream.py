"""Anthropic Messages API stream events as OpenAI chat completion chunks: a small state machine.

`AnthropicStreamMapper.chunks` takes one parsed event (untrusted upstream JSON) and returns the
`chat.completion.chunk` objects it means for an OpenAI-format client:

- `message_start` -> the role chunk (and the id, model and input usage are noted);
- `content_block_start` of a `tool_use` block -> a tool call chunk with its id and name;
- `content_block_delta`: `text_delta` -> a content chunk, `input_json_delta` -> a chunk of the
  tool call's arguments;
- `message_delta` -> the finish chunk (`finish_reason` from `stop_reason`; its usage is noted);
- `message_stop` -> nothing, but the stream is `finished`;
- `error` -> nothing, but `error` holds its (type, message); `ping` and event or block types it
  does not know -> nothing.

The usage is the merge of `message_start`'s and `message_delta`'s counts, checked by
`routing.usage.anthropic_usage_parse` before anything is made of it.
"""

import time
from typing import Any

from ..text import text_bounded
from ..usage import Usage, UsageProblem, anthropic_usage_parse, usage_openai_fields
from .anthropic_format import answer_id, answer_model, finish_reason, tool_call_openai

USAGE_FIELDS = ("input_tokens", "output_tokens", "cache_read_input_tokens", "cache_creation_input_tokens")
ERROR_TYPE_MAX = 40
ERROR_MESSAGE_MAX = 500

Chunk = dict[str, Any]


class AnthropicStreamMapper:
    """One stream's state: its id and model, the tool calls' indexes, the usage counts seen so far."""

    def __init__(self) -> None:
        self.id = answer_id(None)
        self.model = answer_model(None)
        self.created = int(time.time())
        self.usage_counts: dict[str, Any] = {}
        self.has_final_usage = False  # message_delta has given the output count
        self.tool_indexes: dict[Any, int] = {}  # Messages API block index -> OpenAI tool call index
        self.finished = False
        self.error: tuple[str, str] | None = None

    def chunks(self, event: dict[str, Any]) -> list[Chunk]:
        kind = event.get("type")
        if kind == "message_start":
            return self._message_start(event.get("message"))
        if kind == "content_block_start":
            return self._block_start(event.get("index"), event.get("content_block"))
        if kind == "content_block_delta":
            return self._block_delta(event.get("index"), event.get("delta"))
        if kind == "message_delta":
            return self._message_delta(event.get("delta"), event.get("usage"))
        if kind == "message_stop":
            self.finished = True
        elif kind == "error":
            self.error = anthropic_error_event(event)
        return []

    def usage(self) -> Usage | UsageProblem:
        """The stream's checked usage; `no_usage` until `message_delta` has given the final counts."""
        if not self.has_final_usage:
            return UsageProblem("no_usage")
        return anthropic_usage_parse(self.usage_counts)

    def usage_chunk(self, usage: Usage) -> Chunk:
        """The last chunk for a client that asked for usage (`stream_options.include_usage`)."""
        return {**self._head(), "choices": [], "usage": usage_openai_fields(usage)}

    def _head(self) -> Chunk:
        return {"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model}

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> Chunk:
        return {**self._head(), "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

    def _note_usage(self, usage: Any) -> None:
        if isinstance(usage, dict):
            self.usage_counts.update((name, usage[name]) for name in USAGE_FIELDS if name in usage)

    def _message_start(self, message: Any) -> list[Chunk]:
        if isinstance(message, dict):
            self.id = answer_id(message.get("id"))
            self.model = answer_model(message.get("model"))
            self._note_usage(message.get("usage"))
        return [self._chunk({"role": "assistant", "content": ""})]

    def _block_start(self, index: Any, block: Any) -> list[Chunk]:
        if not isinstance(block, dict):
            return []
        if block.get("type") == "tool_use" and isinstance(index, int) and index not in self.tool_indexes:
            self.tool_indexes[index] = len(self.tool_indexes)
            call = tool_call_openai({**block, "input": None}, index=self.tool_indexes[index])
            call["function"]["arguments"] = ""
            return [self._chunk({"tool_calls": [call]})]
        if block.get("type") == "text" and isinstance(block.get("text"), str) and block["text"]:
            return [self._chunk({"content": block["text"]})]
        return []

    def _block_delta(self, index: Any, delta: Any) -> list[Chunk]:
        if not isinstance(delta, dict):
            return []
        kind = delta.get("type")
        if kind == "text_delta" and isinstance(delta.get("text"), str):
            return [self._chunk({"content": delta["text"]})]
        if kind == "input_json_delta" and isinstance(delta.get("partial_json"), str) and index in self.tool_indexes:
            arguments = {"index": self.tool_indexes[index], "function": {"arguments": delta["partial_json"]}}
            return [self._chunk({"tool_calls": [arguments]})]
        return []

    def _message_delta(self, delta: Any, usage: Any) -> list[Chunk]:
        self._note_usage(usage)
        self.has_final_usage = self.has_final_usage or isinstance(usage, dict)
        reason = finish_reason(delta.get("stop_reason")) if isinstance(delta, dict) else None
        return [self._chunk({}, reason or "stop")]


def anthropic_error_event(event: dict) -> tuple[str, str]:
    """An `error` event's type and message, fit for a log line and a call row (bounded, no NUL)."""
    error = event.get("error") if isinstance(event.get("error"), dict) else {}
    return (
        text_bounded(error.get("type"), ERROR_TYPE_MAX) or "error",
        text_bounded(error.get("message"), ERROR_MESSAGE_MAX) or "the upstream sent an error event",
    )
