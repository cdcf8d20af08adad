"""Validation of the /v1/chat/completions body: enough to give clear 400s, the rest passes through."""

from dataclasses import dataclass
from typing import Any, ClassVar

import orjson

from .errors import ApiError

KIND_NAMES = {bool: "a boolean", dict: "an object", list: "an array"}
ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
# Largest accepted output cap and choice count: far above any model's, small enough for exact Decimal costs.
MAX_TOKENS_LIMIT = 100_000_000
CHOICES_LIMIT = 128  # OpenAI's own limit on `n`


@dataclass(slots=True)
class ChatRequest:
    kind: ClassVar[str] = "chat"  # the kind of model that may answer it (ModelEndpoint.Kind)
    body: dict[str, Any]  # everything the client sent, forwarded upstream (model rewritten)
    model: str
    stream: bool
    client_wants_usage: bool
    fallback_models: list[str]
    max_tokens: int | None  # the larger of `max_tokens` and `max_completion_tokens`: an upstream may honour either
    choices: int  # `n`: each choice is billed its own output tokens
    body_size: int  # bytes of JSON the client sent

    def recorded(self) -> dict[str, Any]:
        """What the call row keeps of the request (routing/metering.py `CallOutcome` fields)."""
        asked = {"stream": self.stream, "messages": self.body.get("messages") or [], "request_body": self.body}
        return {"requested": self.model, "kind": self.kind, **asked}


def json_object_parse(raw: bytes) -> dict[str, Any]:
    """The body as a JSON object, or ApiError(400, code invalid_json)."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise ApiError(400, "The request body is not valid JSON.", code="invalid_json") from None
    if not isinstance(body, dict):
        raise ApiError(400, "The request body must be a JSON object.", code="invalid_json")
    return body


def invalid_param(param: str, problem: str) -> ApiError:
    """A 400 naming the bad field: "Invalid 'param': problem."."""
    return ApiError(400, f"Invalid '{param}': {problem}.", code="invalid_value", param=param)


def chat_request_parse(raw: bytes) -> ChatRequest:
    """Parse and check a chat completions body; raises ApiError(400) naming the bad `param`."""
    body = json_object_parse(raw)
    model = body.get("model")
    if not is_name(model):
        raise invalid_param(
            "model", f"you must provide a model or route name (1 to {NAME_MAX} characters, no control characters)"
        )
    _check_messages(body.get("messages"))
    stream = optional_field(body, "stream", bool, False)
    stream_options = optional_field(body, "stream_options", dict, None)
    fallback_models = optional_field(body, "fallback_models", list, [])
    if not all(is_name(name) for name in fallback_models):
        raise invalid_param(
            "fallback_models", f"must be a list of model or route names (at most {NAME_MAX} characters, printable)"
        )
    caps = [_positive_int(body, key, MAX_TOKENS_LIMIT) for key in ("max_tokens", "max_completion_tokens")]
    max_tokens = max((cap for cap in caps if cap is not None), default=None)
    choices = _positive_int(body, "n", CHOICES_LIMIT) or 1
    for key, highest in (("temperature", 2), ("top_p", 1)):
        value = body.get(key)
        if value is not None and (not isinstance(value, (int, float)) or isinstance(value, bool)):
            raise invalid_param(key, "must be a number")
        if value is not None and not 0 <= value <= highest:  # OpenAI's ranges: an upstream would refuse it
            raise invalid_param(key, f"must be between 0 and {highest}, got {value}")
    return ChatRequest(
        body=body,
        model=model,
        stream=stream,
        client_wants_usage=bool(stream_options and stream_options.get("include_usage")),
        fallback_models=fallback_models,
        max_tokens=max_tokens,
        choices=choices,
        body_size=len(raw),
    )


# The longest name the registry holds (routing.models.NAME_VALIDATOR): a longer one names nothing, and
# refusing it here keeps a client's megabyte-long "name" out of rows, logs and error messages.
NAME_MAX = 100


def is_name(value: Any) -> bool:
    """A model or route name: 1 to NAME_MAX printable characters (no registry name has any other)."""
    return isinstance(value, str) and 0 < len(value) <= NAME_MAX and value.isprintable()


def _check_messages(messages: Any) -> None:
    if messages is None:
        raise invalid_param("messages", "is required")
    if not isinstance(messages, list) or not messages:
        raise invalid_param("messages", "must be a non-empty array of messages")
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise invalid_param(f"messages[{i}]", "must be an object with a role")
        role = message.get("role")
        if not isinstance(role, str) or role not in ROLES:
            raise invalid_param(f"messages[{i}].role", f"must be one of {', '.join(sorted(ROLES))}")
        content = message.get("content")
        if content is not None and not isinstance(content, (str, list)):
            raise invalid_param(f"messages[{i}].content", "must be a string or an array of content parts")
        for j, part in enumerate(content if isinstance(content, list) else ()):
            if not isinstance(part, dict):
                raise invalid_param(f"messages[{i}].content[{j}]", "must be an object with a type")
            if not isinstance(part.get("text", ""), str):
                raise invalid_param(f"messages[{i}].content[{j}].text", "must be a string")


def _positive_int(body: dict[str, Any], key: str, limit: int) -> int | None:
    value = body.get(key)
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= limit):
        raise invalid_param(key, f"must be an integer from 1 to {limit}")
    return value


def optional_field(body: dict[str, Any], key: str, kind: type, default: Any) -> Any:
    value = body.get(key)
    if value is None:
        return default
    if not isinstance(value, kind):
        raise invalid_param(key, f"must be {KIND_NAMES[kind]}")
    return value
