"""Anthropic's Messages API to OpenAI's chat completions and back, for /v1/messages on a candidate that
speaks chat completions: pure functions over checked JSON values (routing/messages_schema.py checked
the request; an upstream's answer was checked by its adapter).

What has no counterpart is dropped on the way (documented in the README): `cache_control` marks,
`top_k`, `thinking` and thinking blocks, server tools (tools without an `input_schema`). Everything an
OpenAI-compatible upstream can act on is translated: system blocks, text, images, PDF documents,
tool definitions, tool choice, tool calls and their results, stop sequences, sampling parameters and
`metadata.user_id`.
"""

from collections.abc import Iterator
from typing import Any

import orjson

from .providers.anthropic_format import tool_input
from .usage import Usage, UsageProblem, prompt_tokens_estimate, tokens_for_chars

STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}
TOOL_CHOICES = {"auto": "auto", "any": "required", "none": "none"}


# ----------------------------------------------------------------------------- the request


def chat_body_from_messages(body: dict[str, Any]) -> dict[str, Any]:
    """The chat completions request for a checked Messages request `body` (model name unchanged)."""
    messages: list[dict[str, Any]] = []
    system = body.get("system")
    if system:
        messages.append({"role": "system", "content": system if isinstance(system, str) else _text_parts(system)})
    for message in body["messages"]:
        messages.extend(_chat_messages(message["role"], message["content"]))
    chat: dict[str, Any] = {"model": body["model"], "messages": messages, "max_tokens": body["max_tokens"]}
    for name in ("temperature", "top_p", "stream"):
        if body.get(name) is not None:
            chat[name] = body[name]
    if body.get("stop_sequences"):
        chat["stop"] = body["stop_sequences"]
    user_id = (body.get("metadata") or {}).get("user_id")
    if user_id:
        chat["user"] = user_id
    tools = [_chat_tool(tool) for tool in body.get("tools") or () if "input_schema" in tool]
    if tools:
        chat["tools"] = tools
        choice = body.get("tool_choice")
        if choice:
            chat["tool_choice"] = _chat_tool_choice(choice)
            if choice.get("disable_parallel_tool_use"):
                chat["parallel_tool_calls"] = False
    return chat


def _text_parts(blocks: list[dict[str, Any]]) -> list[dict[str, str]]:
    return [{"type": "text", "text": block["text"]} for block in blocks if block.get("type") == "text"]


def _chat_messages(role: str, content: str | list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """One Anthropic message as chat messages: a user turn's tool results become `tool` messages first."""
    if isinstance(content, str):
        yield {"role": role, "content": content}
        return
    if role == "assistant":
        yield _assistant_message(content)
        return
    parts = []
    for block in content:
        kind = block.get("type")
        if kind == "tool_result":
            yield {"role": "tool", "tool_call_id": block["tool_use_id"], "content": _tool_result_text(block)}
        else:
            part = _user_part(block)
            if part is not None:
                parts.append(part)
    if parts:
        yield {"role": "user", "content": parts}


def _assistant_message(content: list[dict[str, Any]]) -> dict[str, Any]:
    text = "".join(block["text"] for block in content if block.get("type") == "text")
    message: dict[str, Any] = {"role": "assistant", "content": text or None}
    calls = [
        {
            "id": block["id"],
            "type": "function",
            "function": {"name": block["name"], "arguments": orjson.dumps(block["input"]).decode()},
        }
        for block in content
        if block.get("type") == "tool_use"
    ]
    if calls:
        message["tool_calls"] = calls
    return message


def _user_part(block: dict[str, Any]) -> dict[str, Any] | None:
    kind = block.get("type")
    if kind == "text":
        return {"type": "text", "text": block["text"]}
    source = block.get("source") or {}
    if kind == "image":
        if source.get("type") == "url":
            return {"type": "image_url", "image_url": {"url": source.get("url")}}
        return {"type": "image_url", "image_url": {"url": _data_url(source)}}
    if kind == "document":
        if source.get("type") == "text":
            return {"type": "text", "text": source.get("data", "")}
        return {"type": "file", "file": {"file_data": _data_url(source), "filename": block.get("title") or "document"}}
    return None  # thinking, server tool results: nothing a chat completions upstream can read


def _data_url(source: dict[str, Any]) -> str:
    return f"data:{source.get('media_type', 'application/octet-stream')};base64,{source.get('data', '')}"


def _tool_result_text(block: dict[str, Any]) -> str:
    content = block.get("content")
    if isinstance(content, list):
        content = "".join(part.get("text", "") for part in content if part.get("type") == "text")
    text = content or ""
    return f"Error: {text}" if block.get("is_error") else text


def _chat_tool(tool: dict[str, Any]) -> dict[str, Any]:
    function = {"name": tool["name"], "parameters": tool["input_schema"]}
    if tool.get("description"):
        function["description"] = tool["description"]
    return {"type": "function", "function": function}


def _chat_tool_choice(choice: dict[str, Any]) -> str | dict[str, Any]:
    if choice["type"] == "tool":
        return {"type": "function", "function": {"name": choice["name"]}}
    return TOOL_CHOICES[choice["type"]]


# ----------------------------------------------------------------------------- the answer


def usage_fields(usage: Usage | UsageProblem | None) -> dict[str, int]:
    """Anthropic's usage object for `usage`: `input_tokens` excludes the tokens read from (or written
    to) the prompt cache, which have fields of their own."""
    if not isinstance(usage, Usage):
        return {"input_tokens": 0, "output_tokens": 0}
    return {
        "input_tokens": max(0, usage.prompt - usage.cached - usage.cache_write),
        "output_tokens": usage.completion,
        "cache_creation_input_tokens": usage.cache_write,
        "cache_read_input_tokens": usage.cached,
    }


def message_from_completion(
    completion: dict[str, Any], *, message_id: str, model: str, usage: Usage | UsageProblem
) -> dict[str, Any]:
    """An Anthropic message for an OpenAI chat completion (its first choice)."""
    choices = completion.get("choices") or [{}]
    choice = choices[0] if isinstance(choices[0], dict) else {}
    message = choice.get("message") if isinstance(choice.get("message"), dict) else {}
    content: list[dict[str, Any]] = []
    if isinstance(message.get("content"), str) and message["content"]:
        content.append({"type": "text", "text": message["content"]})
    for call in message.get("tool_calls") or ():
        function = call.get("function") if isinstance(call, dict) else None
        if isinstance(function, dict):
            content.append(_tool_use_block(call.get("id"), function))
    return {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason(choice.get("finish_reason")),
        "stop_sequence": None,
        "usage": usage_fields(usage),
    }


def _tool_use_block(call_id: Any, function: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "tool_use",
        "id": call_id if isinstance(call_id, str) else "toolu_routerweb",
        "name": function.get("name") if isinstance(function.get("name"), str) else "",
        "input": tool_input(function.get("arguments")),
    }


def stop_reason(finish_reason: Any) -> str:
    return STOP_REASONS.get(finish_reason, "end_turn") if isinstance(finish_reason, str) else "end_turn"


def sse_event(data: dict[str, Any]) -> bytes:
    """One Anthropic server-sent event: its `event:` line names the data's `type`."""
    return b"event: " + data["type"].encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


def input_tokens_estimate(chat_body: dict[str, Any]) -> int:
    """The estimated prompt tokens of a translated Messages request: routerweb's estimate of its
    messages (system prompt included), plus its tool definitions' JSON at the same rate."""
    total = prompt_tokens_estimate(chat_body["messages"])
    if chat_body.get("tools"):
        total += tokens_for_chars(len(orjson.dumps(chat_body["tools"])))
    return total
