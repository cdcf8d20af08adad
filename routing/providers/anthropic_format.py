"""Translation between OpenAI's chat completions and Anthropic's Messages API: pure functions.

The Anthropic adapter (`anthropic.py`) uses them for an OpenAI-format client and an Anthropic
upstream; the stream's events are mapped by `anthropic_stream.py`. Requests are the client's checked
OpenAI body (`routing/schemas.py`); answers are untrusted upstream JSON, so every field taken from
one is checked for its type and anything odd is left out rather than passed on.

What maps to what:

- `system` and `developer` messages -> `system` (a string, or text blocks when a part carries more
  than its text, so `cache_control` marks survive); consecutive messages of one role are merged into
  one, as the Messages API wants user and assistant turns to alternate, and empty ones are left out.
- content parts: `text` -> text block; `image_url` -> image block, a `data:` URL as a base64
  source and any other URL as a url source; other parts are passed as they are.
- an assistant's `tool_calls` -> `tool_use` blocks (arguments parsed from JSON); `tool` messages ->
  `tool_result` blocks in a user turn.
- `max_tokens`: the request's `max_tokens`/`max_completion_tokens`, else the model's output limit,
  else `DEFAULT_MAX_TOKENS` (the Messages API requires it). `temperature` is capped at 1 (the
  Messages API's upper bound), `top_p` passes, `stop` -> `stop_sequences`, `user` ->
  `metadata.user_id`; `tools` and `tool_choice` (`auto`, `required` -> `any`, `none`, a named
  function -> `tool`; `parallel_tool_calls: false` -> `disable_parallel_tool_use`). `n` and other
  OpenAI-only fields are dropped (one choice is answered).
- answers: text blocks -> `content`, `tool_use` blocks -> `tool_calls`, `stop_reason` ->
  `finish_reason` (`FINISH_REASONS`), usage -> OpenAI's usage (`routing.usage.usage_openai_fields`).
"""

import time
from typing import Any

import orjson

from ..text import text_bounded
from ..usage import Usage, UsageProblem, anthropic_usage_parse, usage_openai_fields

DEFAULT_MAX_TOKENS = 4096
ANTHROPIC_VERSION = "2023-06-01"
FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
ID_MAX = 200  # ids and model names taken from an answer: bounded, never NUL
SYSTEM_ROLES = frozenset({"system", "developer"})

Block = dict[str, Any]
Turn = dict[str, Any]


def openai_request_to_anthropic(
    request: dict[str, Any], *, upstream_model: str, model_max_tokens: int | None
) -> dict[str, Any]:
    """The Messages API body for a checked OpenAI chat completions request."""
    system, turns = _turns(request["messages"])
    body: dict[str, Any] = {
        "model": upstream_model,
        "max_tokens": request_max_tokens(request) or model_max_tokens or DEFAULT_MAX_TOKENS,
        "messages": turns,
    }
    if system:
        body["system"] = system
    if isinstance(request.get("temperature"), (int, float)):
        body["temperature"] = min(request["temperature"], 1)
    if isinstance(request.get("top_p"), (int, float)):
        body["top_p"] = request["top_p"]
    stop = request.get("stop")
    if isinstance(stop, str):
        body["stop_sequences"] = [stop]
    elif isinstance(stop, list) and stop:
        body["stop_sequences"] = [item for item in stop if isinstance(item, str)]
    if isinstance(request.get("user"), str):
        body["metadata"] = {"user_id": request["user"]}
    tools = request.get("tools")
    if isinstance(tools, list) and tools:
        body["tools"] = [_tool(tool) for tool in tools if isinstance(tool, dict)]
        choice = _tool_choice(request.get("tool_choice"), parallel=request.get("parallel_tool_calls"))
        if choice:
            body["tool_choice"] = choice
    if request.get("stream"):
        body["stream"] = True
    return body


def request_max_tokens(request: dict[str, Any]) -> int | None:
    """The larger of `max_tokens` and `max_completion_tokens` (as `schemas.chat_request_parse` reads them)."""
    caps = [request.get(key) for key in ("max_tokens", "max_completion_tokens")]
    return max((cap for cap in caps if isinstance(cap, int) and not isinstance(cap, bool)), default=None)


def _turns(messages: list[dict[str, Any]]) -> tuple[str | list[Block], list[Turn]]:
    """(system, messages): the system prompt and the alternating user/assistant turns."""
    system_parts: list[Block] = []
    turns: list[Turn] = []
    for message in messages:
        role = message["role"]
        if role in SYSTEM_ROLES:
            system_parts.extend(_blocks(message.get("content")))
            continue
        if role == "tool":
            role, blocks = "user", [_tool_result(message)]
        elif role == "assistant":
            blocks = [*_blocks(message.get("content")), *_tool_uses(message.get("tool_calls"))]
        else:  # user, and the legacy `function` role's result as its text
            role, blocks = "user", _blocks(message.get("content"))
        if not blocks:  # an empty turn is refused; leaving it out lets its neighbours merge
            continue
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    for turn in turns:  # a turn of one text block is sent as a plain string
        content = turn["content"]
        if len(content) == 1 and content[0].get("type") == "text" and set(content[0]) == {"type", "text"}:
            turn["content"] = content[0]["text"]
    return _system(system_parts), turns


def _system(parts: list[Block]) -> str | list[Block]:
    if all(set(part) == {"type", "text"} for part in parts):
        return "\n\n".join(part["text"] for part in parts)
    return parts


def _blocks(content: Any) -> list[Block]:
    """A message's content as Messages API content blocks (empty text is left out: it is refused)."""
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    if not isinstance(content, list):
        return []
    blocks = []
    for part in content:
        if isinstance(part, dict) and part.get("type") == "text":
            if isinstance(part.get("text"), str) and part["text"]:
                block = {"type": "text", "text": part["text"]}
                if "cache_control" in part:
                    block["cache_control"] = part["cache_control"]
                blocks.append(block)
        elif isinstance(part, dict) and part.get("type") == "image_url":
            blocks.append(_image(part.get("image_url")))
        else:
            blocks.append(part)
    return blocks


def _image(image_url: Any) -> Block:
    url = image_url.get("url") if isinstance(image_url, dict) else image_url
    url = url if isinstance(url, str) else ""
    if url.startswith("data:"):
        header, _, data = url[5:].partition(",")
        media_type = header.partition(";")[0]
        return {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}
    return {"type": "image", "source": {"type": "url", "url": url}}


def _tool_uses(tool_calls: Any) -> list[Block]:
    uses = []
    for call in tool_calls if isinstance(tool_calls, list) else ():
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict):
            continue
        uses.append(
            {
                "type": "tool_use",
                "id": call.get("id"),
                "name": function.get("name"),
                "input": tool_input(function.get("arguments")),
            }
        )
    return uses


def tool_input(arguments: Any) -> dict[str, Any]:
    """A tool call's arguments (a JSON string in OpenAI's format) as the `input` object of the Messages
    API; text that does not parse as an object is kept as `{"arguments": <the text>}` rather than lost."""
    if isinstance(arguments, dict):
        return arguments
    if not isinstance(arguments, str):
        return {}
    try:
        parsed = orjson.loads(arguments or "{}")
    except orjson.JSONDecodeError:
        parsed = None
    return parsed if isinstance(parsed, dict) else {"arguments": arguments}


def _tool_result(message: dict[str, Any]) -> Block:
    content = message.get("content")
    result: Block = {"type": "tool_result", "tool_use_id": message.get("tool_call_id")}
    result["content"] = content if isinstance(content, str) else _blocks(content)
    return result


def _tool(tool: dict[str, Any]) -> dict[str, Any]:
    function = tool.get("function") if tool.get("type") == "function" else None
    if not isinstance(function, dict):
        return tool  # already a Messages API tool (e.g. a server tool): as it is
    spec: dict[str, Any] = {
        "name": function.get("name"),
        "input_schema": function.get("parameters") or {"type": "object", "properties": {}},
    }
    if isinstance(function.get("description"), str):
        spec["description"] = function["description"]
    return spec


def _tool_choice(choice: Any, *, parallel: Any) -> dict[str, Any] | None:
    if choice == "required":
        mapped: dict[str, Any] | None = {"type": "any"}
    elif choice == "none":
        mapped = {"type": "none"}
    elif isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        mapped = {"type": "tool", "name": choice["function"].get("name")}
    else:
        mapped = {"type": "auto"} if choice == "auto" or parallel is False else None
    if parallel is False and mapped is not None and mapped["type"] != "none":
        mapped["disable_parallel_tool_use"] = True
    return mapped


def anthropic_message_to_openai(message: dict[str, Any]) -> tuple[dict[str, Any], Usage | UsageProblem]:
    """A Messages API answer as an OpenAI chat completion, and its checked usage. The completion's
    `usage` is written from the checked usage only (left out when the upstream's is not valid)."""
    text_parts: list[str] = []
    tool_calls = []
    content = message.get("content")
    for block in content if isinstance(content, list) else ():
        if not isinstance(block, dict):
            continue
        if block.get("type") == "text" and isinstance(block.get("text"), str):
            text_parts.append(block["text"])
        elif block.get("type") == "tool_use":
            tool_calls.append(tool_call_openai(block, index=None))
    reply: dict[str, Any] = {
        "role": "assistant",
        "content": "".join(text_parts) if text_parts or not tool_calls else None,
    }
    if tool_calls:
        reply["tool_calls"] = tool_calls
    usage = anthropic_usage_parse(message.get("usage"))
    completion: dict[str, Any] = {
        "id": answer_id(message.get("id")),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": answer_model(message.get("model")),
        "choices": [{"index": 0, "message": reply, "finish_reason": finish_reason(message.get("stop_reason"))}],
    }
    if isinstance(usage, Usage):
        completion["usage"] = usage_openai_fields(usage)
    return completion, usage


def tool_call_openai(block: dict[str, Any], *, index: int | None) -> dict[str, Any]:
    """A `tool_use` block as an OpenAI tool call (with `index` when it is a stream's delta)."""
    name = block.get("name")
    arguments = block.get("input")
    call: dict[str, Any] = {
        "id": text_bounded(block.get("id"), ID_MAX) or "",
        "type": "function",
        "function": {
            "name": text_bounded(name, ID_MAX) or "",
            "arguments": orjson.dumps(arguments).decode() if isinstance(arguments, dict) and arguments else "{}",
        },
    }
    return call if index is None else {"index": index, **call}


def finish_reason(stop_reason: Any) -> str | None:
    """OpenAI's `finish_reason` for a Messages API `stop_reason` (None while there is none)."""
    if stop_reason is None:
        return None
    return FINISH_REASONS.get(stop_reason, "stop") if isinstance(stop_reason, str) else "stop"


def answer_id(value: Any) -> str:
    """An answer's id for the client: the upstream's when it is a sane string."""
    return "chatcmpl-" + (text_bounded(value, ID_MAX) or "anthropic")


def answer_model(value: Any) -> str:
    """An answer's model for the client: the upstream's when it is a sane string."""
    return text_bounded(value, ID_MAX) or "anthropic"
