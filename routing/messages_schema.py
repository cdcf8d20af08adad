"""Validation of the /v1/messages body (Anthropic's Messages API) where it enters routerweb.

Everything the gateway reads is checked here, with bounded sizes, and answered with a 400 naming the
field; what passes is forwarded as sent to an Anthropic upstream and translated for the others
(routing/messages_format.py). The checked request also carries its chat completions translation as a
`ChatRequest`, so that rate limits, budgets and the call row see one request shape whatever the API.
"""

import re
from dataclasses import dataclass
from typing import Any

from .messages_format import chat_body_from_messages
from .schemas import MAX_TOKENS_LIMIT, NAME_MAX, ChatRequest, invalid_param, json_object_parse

ROLES = ("user", "assistant")
# Anthropic's own limits where it states them (tool names, stop sequences), generous bounds elsewhere:
# every count is far inside what a row, a log line or an error message may hold.
TOOL_NAME = re.compile(r"[a-zA-Z0-9_-]{1,128}")
ID_MAX = 256
MESSAGES_MAX = 100_000
BLOCKS_MAX = 10_000
TOOLS_MAX = 1_000
STOP_SEQUENCES_MAX = 64
STOP_SEQUENCE_MAX = 1_000
METADATA_USER_MAX = 256
BLOCK_TYPES = frozenset(
    {
        "text",
        "image",
        "document",
        "tool_use",
        "tool_result",
        "thinking",
        "redacted_thinking",
        "server_tool_use",
        "web_search_tool_result",
        "search_result",
        "container_upload",
    }
)
TOOL_CHOICE_TYPES = frozenset({"auto", "any", "tool", "none"})
CACHE_CONTROL_TYPES = frozenset({"ephemeral"})


@dataclass(slots=True)
class MessagesRequest(ChatRequest):
    """A checked Messages request: `native` is the body as the client sent it (forwarded to Anthropic
    upstreams, model rewritten); the inherited fields describe its chat completions translation."""

    native: dict[str, Any]


def messages_request_parse(raw: bytes, *, max_tokens_required: bool = True) -> MessagesRequest:
    """Parse and check a Messages body; raises ApiError(400) naming the bad field. Without
    `max_tokens_required` (count_tokens' body), a missing `max_tokens` counts as 1."""
    body = json_object_parse(raw)
    model = body.get("model")
    if not isinstance(model, str) or not 0 < len(model) <= NAME_MAX or not model.isprintable():
        raise invalid_param("model", f"a model or route name is required (1 to {NAME_MAX} printable characters)")
    max_tokens = body.get("max_tokens")
    if max_tokens is None and not max_tokens_required:
        max_tokens = body["max_tokens"] = 1
    if not _is_int(max_tokens) or not 1 <= max_tokens <= MAX_TOKENS_LIMIT:
        raise invalid_param("max_tokens", f"an integer from 1 to {MAX_TOKENS_LIMIT} is required")
    _check_messages(body.get("messages"))
    _check_system(body.get("system"))
    _check_tools(body.get("tools"), body.get("tool_choice"))
    _check_sampling(body)
    _check_stop_sequences(body.get("stop_sequences"))
    _check_metadata(body.get("metadata"))
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise invalid_param("stream", "must be a boolean")
    return MessagesRequest(
        body=chat_body_from_messages(body),
        model=model,
        stream=bool(stream),
        client_wants_usage=False,
        fallback_models=[],
        max_tokens=max_tokens,
        choices=1,
        body_size=len(raw),
        native=body,
    )


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_text(value: Any, max_length: int) -> bool:
    """A printable identifier of at most `max_length` characters (ids, names: they reach errors and logs)."""
    return isinstance(value, str) and 0 < len(value) <= max_length and value.isprintable()


def _check_messages(messages: Any) -> None:
    if not isinstance(messages, list) or not messages:
        raise invalid_param("messages", "a non-empty array of messages is required")
    if len(messages) > MESSAGES_MAX:
        raise invalid_param("messages", f"at most {MESSAGES_MAX} messages")
    for i, message in enumerate(messages):
        where = f"messages.{i}"
        if not isinstance(message, dict):
            raise invalid_param(where, "must be an object with a role and content")
        if message.get("role") not in ROLES:
            raise invalid_param(f"{where}.role", "must be 'user' or 'assistant'")
        content = message.get("content")
        if isinstance(content, str):
            continue
        if not isinstance(content, list):
            raise invalid_param(f"{where}.content", "must be a string or an array of content blocks")
        _check_blocks(content, f"{where}.content")


def _check_blocks(blocks: list[Any], where: str) -> None:
    if len(blocks) > BLOCKS_MAX:
        raise invalid_param(where, f"at most {BLOCKS_MAX} content blocks")
    for i, block in enumerate(blocks):
        here = f"{where}.{i}"
        if not isinstance(block, dict) or block.get("type") not in BLOCK_TYPES:
            raise invalid_param(here, f"must be a content block with a type among {', '.join(sorted(BLOCK_TYPES))}")
        _check_block(block, here)
        _check_cache_control(block.get("cache_control"), f"{here}.cache_control")


def _check_block(block: dict[str, Any], where: str) -> None:
    kind = block["type"]
    if kind == "text" and not isinstance(block.get("text"), str):
        raise invalid_param(f"{where}.text", "must be a string")
    if kind in ("image", "document") and not isinstance(block.get("source"), dict):
        raise invalid_param(f"{where}.source", "must be an object")
    if kind == "tool_use":
        if not _is_text(block.get("id"), ID_MAX):
            raise invalid_param(f"{where}.id", f"must be a printable string of at most {ID_MAX} characters")
        if not isinstance(block.get("name"), str) or not TOOL_NAME.fullmatch(block["name"]):
            raise invalid_param(f"{where}.name", "must match ^[a-zA-Z0-9_-]{1,128}$")
        if not isinstance(block.get("input"), dict):
            raise invalid_param(f"{where}.input", "must be an object")
    if kind == "tool_result":
        if not _is_text(block.get("tool_use_id"), ID_MAX):
            raise invalid_param(f"{where}.tool_use_id", f"must be a printable string of at most {ID_MAX} characters")
        content = block.get("content")
        if isinstance(content, list):
            _check_blocks(content, f"{where}.content")
        elif content is not None and not isinstance(content, str):
            raise invalid_param(f"{where}.content", "must be a string or an array of content blocks")
        if block.get("is_error") is not None and not isinstance(block["is_error"], bool):
            raise invalid_param(f"{where}.is_error", "must be a boolean")


def _check_cache_control(value: Any, where: str) -> None:
    if value is not None and (not isinstance(value, dict) or value.get("type") not in CACHE_CONTROL_TYPES):
        raise invalid_param(where, "must be {'type': 'ephemeral'} (with an optional ttl)")


def _check_system(system: Any) -> None:
    if system is None or isinstance(system, str):
        return
    if not isinstance(system, list):
        raise invalid_param("system", "must be a string or an array of text blocks")
    for i, block in enumerate(system):
        if not isinstance(block, dict) or block.get("type") != "text" or not isinstance(block.get("text"), str):
            raise invalid_param(f"system.{i}", "must be a text block ({'type': 'text', 'text': ...})")
        _check_cache_control(block.get("cache_control"), f"system.{i}.cache_control")


def _check_tools(tools: Any, tool_choice: Any) -> None:
    if tools is not None:
        if not isinstance(tools, list) or len(tools) > TOOLS_MAX:
            raise invalid_param("tools", f"must be an array of at most {TOOLS_MAX} tools")
        for i, tool in enumerate(tools):
            if not isinstance(tool, dict) or not isinstance(tool.get("name"), str):
                raise invalid_param(f"tools.{i}", "must be an object with a name")
            if not TOOL_NAME.fullmatch(tool["name"]):
                raise invalid_param(f"tools.{i}.name", "must match ^[a-zA-Z0-9_-]{1,128}$")
            if "input_schema" in tool and not isinstance(tool["input_schema"], dict):
                raise invalid_param(f"tools.{i}.input_schema", "must be a JSON schema object")
            if "type" not in tool and "input_schema" not in tool:
                raise invalid_param(f"tools.{i}.input_schema", "is required for a custom tool")
            if tool.get("description") is not None and not isinstance(tool["description"], str):
                raise invalid_param(f"tools.{i}.description", "must be a string")
            _check_cache_control(tool.get("cache_control"), f"tools.{i}.cache_control")
    if tool_choice is None:
        return
    if not isinstance(tool_choice, dict) or tool_choice.get("type") not in TOOL_CHOICE_TYPES:
        raise invalid_param("tool_choice", "must be an object whose type is auto, any, tool or none")
    if tool_choice["type"] == "tool" and not (
        isinstance(tool_choice.get("name"), str) and TOOL_NAME.fullmatch(tool_choice["name"])
    ):
        raise invalid_param("tool_choice.name", "must name a tool")
    parallel = tool_choice.get("disable_parallel_tool_use")
    if parallel is not None and not isinstance(parallel, bool):
        raise invalid_param("tool_choice.disable_parallel_tool_use", "must be a boolean")


def _check_sampling(body: dict[str, Any]) -> None:
    for key in ("temperature", "top_p"):
        value = body.get(key)
        if value is None:
            continue
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value <= 1:
            raise invalid_param(key, "must be a number from 0 to 1")
    top_k = body.get("top_k")
    if top_k is not None and (not _is_int(top_k) or not 0 <= top_k <= MAX_TOKENS_LIMIT):
        raise invalid_param("top_k", f"must be an integer from 0 to {MAX_TOKENS_LIMIT}")


def _check_stop_sequences(sequences: Any) -> None:
    if sequences is None:
        return
    if not isinstance(sequences, list) or len(sequences) > STOP_SEQUENCES_MAX:
        raise invalid_param("stop_sequences", f"must be an array of at most {STOP_SEQUENCES_MAX} strings")
    for sequence in sequences:
        if not isinstance(sequence, str) or not 0 < len(sequence) <= STOP_SEQUENCE_MAX or "\x00" in sequence:
            raise invalid_param("stop_sequences", f"each must be a string of 1 to {STOP_SEQUENCE_MAX} characters")


def _check_metadata(metadata: Any) -> None:
    if metadata is None:
        return
    if not isinstance(metadata, dict):
        raise invalid_param("metadata", "must be an object")
    user_id = metadata.get("user_id")
    if user_id is not None and not _is_text(user_id, METADATA_USER_MAX):
        raise invalid_param("metadata.user_id", f"must be a printable string of at most {METADATA_USER_MAX} characters")
