"""Validation of the /v1/embeddings body (OpenAI's format): what routerweb needs is checked here, once,
and the body is forwarded as the client sent it (the model rewritten per candidate).

`input` is a string, a list of strings, a list of token ids or a list of token id lists; every
list is bounded (count and length) and every token id is an integer a 32-bit column or tokenizer
can hold, so a hostile body cannot make the gateway or an upstream do unbounded work.
"""

from dataclasses import dataclass, field
from typing import Any, ClassVar

from .schemas import NAME_MAX, invalid_param, is_name, json_object_parse, optional_field

INPUTS_MAX = 2048  # items of a list input: OpenAI's own limit
TOKEN_IDS_MAX = 32_768  # token ids of one input: above any embedding model's context
TOKEN_ID_MAX = 2**31 - 1
DIMENSIONS_MAX = 65_536
USER_MAX = 256
ENCODING_FORMATS = ("float", "base64")


@dataclass(slots=True)
class EmbeddingRequest:
    """A checked embeddings body. An embedding has no output tokens: `max_tokens` is 0 and `choices` 1,
    so budgets and rate limits bound the call by its input alone."""

    kind: ClassVar[str] = "embeddings"
    stream: ClassVar[bool] = False
    client_wants_usage: ClassVar[bool] = False
    max_tokens: ClassVar[int] = 0
    choices: ClassVar[int] = 1

    body: dict[str, Any]  # forwarded upstream (model rewritten, fallback_models dropped)
    model: str
    fallback_models: list[str] = field(default_factory=list)
    body_size: int = 0  # bytes of JSON the client sent: a bound on the input tokens (billing/pricing.py)
    input_chars: int = 0  # characters of the string inputs
    input_token_ids: int = 0  # token ids of the token inputs (one token each)

    def recorded(self) -> dict[str, Any]:
        """What the call row keeps of the request: the input's size estimates its tokens without usage."""
        sizes = {"input_chars": self.input_chars, "input_token_ids": self.input_token_ids}
        return {"requested": self.model, "kind": self.kind, "stream": False, "request_body": self.body, **sizes}


def embedding_request_parse(raw: bytes) -> EmbeddingRequest:
    """Parse and check an embeddings body; raises ApiError(400) naming the bad `param`."""
    body = json_object_parse(raw)
    model = body.get("model")
    if not is_name(model):
        raise invalid_param(
            "model", f"you must provide a model or route name (1 to {NAME_MAX} characters, no control characters)"
        )
    fallback_models = optional_field(body, "fallback_models", list, [])
    if not all(is_name(name) for name in fallback_models):
        raise invalid_param(
            "fallback_models", f"must be a list of model or route names (at most {NAME_MAX} characters, printable)"
        )
    chars, token_ids = _input_size(body.get("input"))
    encoding_format = body.get("encoding_format")
    if encoding_format is not None and encoding_format not in ENCODING_FORMATS:
        raise invalid_param("encoding_format", f"must be one of {', '.join(ENCODING_FORMATS)}")
    dimensions = body.get("dimensions")
    if dimensions is not None and not _is_int_in(dimensions, 1, DIMENSIONS_MAX):
        raise invalid_param("dimensions", f"must be an integer from 1 to {DIMENSIONS_MAX}")
    user = body.get("user")
    if user is not None and not (isinstance(user, str) and len(user) <= USER_MAX and "\x00" not in user):
        raise invalid_param("user", f"must be a string of at most {USER_MAX} characters, without NUL")
    return EmbeddingRequest(
        body=body,
        model=model,
        fallback_models=fallback_models,
        body_size=len(raw),
        input_chars=chars,
        input_token_ids=token_ids,
    )


def _input_size(value: Any) -> tuple[int, int]:
    """(characters, token ids) in a valid `input`; raises ApiError(400) for any other shape."""
    if value is None:
        raise invalid_param("input", "is required")
    if isinstance(value, str):
        return _text_size("input", value), 0
    if not isinstance(value, list) or not value:
        raise invalid_param("input", "must be a string or a non-empty array of strings, token ids or token id arrays")
    if len(value) > INPUTS_MAX:
        raise invalid_param("input", f"must have at most {INPUTS_MAX} items, got {len(value)}")
    first = value[0]
    if isinstance(first, str):
        return sum(_text_size(f"input[{i}]", item) for i, item in enumerate(value)), 0
    if isinstance(first, list):
        return 0, sum(_token_ids_size(f"input[{i}]", item) for i, item in enumerate(value))
    return 0, _token_ids_size("input", value)


def _text_size(param: str, text: Any) -> int:
    if not isinstance(text, str):
        raise invalid_param(param, "must be a string, like the other items")
    if not text:
        raise invalid_param(param, "must not be empty")
    if "\x00" in text:
        raise invalid_param(param, "must not contain NUL characters")
    return len(text)


def _token_ids_size(param: str, ids: Any) -> int:
    if not isinstance(ids, list) or not ids:
        raise invalid_param(param, "must be a non-empty array of token ids, like the other items")
    if len(ids) > TOKEN_IDS_MAX:
        raise invalid_param(param, f"must have at most {TOKEN_IDS_MAX} token ids, got {len(ids)}")
    for index, token in enumerate(ids):
        if not _is_int_in(token, 0, TOKEN_ID_MAX):
            raise invalid_param(f"{param}[{index}]", f"must be a token id, an integer from 0 to {TOKEN_ID_MAX}")
    return len(ids)


def _is_int_in(value: Any, lowest: int, highest: int) -> bool:
    return type(value) is int and lowest <= value <= highest  # bool is an int subclass: refused
