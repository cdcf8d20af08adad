"""Errors in OpenAI's wire shape: {"error": {"message", "type", "param", "code"}}, with the headers
that tell a client whether trying again can help (`error_headers`); on /v1/messages, in Anthropic's
shape {"type": "error", "error": {"type", "message"}} (`anthropic_error_answer`)."""

import math
from dataclasses import dataclass

import orjson
from django.http import HttpResponse

TYPE_BY_STATUS = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
}


@dataclass(frozen=True, slots=True)
class ApiError(Exception):
    """An error the API answers with; `type` defaults from the status (server_error for 5xx)."""

    status: int
    message: str
    code: str | None = None
    param: str | None = None
    type: str | None = None
    # Seconds after which the same request may succeed (a database or upstreams that are down for now);
    # None: retrying cannot help (a bad request, a budget, a key, a configuration nobody changed).
    retry_after_s: float | None = None

    def body(self) -> bytes:
        return error_body(self.message, status=self.status, code=self.code, param=self.param, type_=self.type)


def error_headers(error: ApiError) -> dict[str, str]:
    """`x-should-retry` (read by OpenAI's SDKs, which otherwise retry every 429 and 5xx twice) and, when
    a retry can help, `Retry-After` in whole seconds."""
    if error.retry_after_s is None:
        return {"x-should-retry": "false"}
    return {"x-should-retry": "true", "Retry-After": str(max(1, math.ceil(error.retry_after_s)))}


def error_body(
    message: str, *, status: int, code: str | None = None, param: str | None = None, type_: str | None = None
) -> bytes:
    error_type = type_ or TYPE_BY_STATUS.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return orjson.dumps({"error": {"message": message, "type": error_type, "param": param, "code": code}})


def error_response(error: ApiError, *, anthropic: bool = False) -> HttpResponse:
    """The HTTP response of `error`, in OpenAI's shape (or Anthropic's: `anthropic_error_answer`)."""
    status, body = anthropic_error_answer(error) if anthropic else (error.status, error.body())
    return HttpResponse(body, status=status, content_type="application/json", headers=error_headers(error))


# Anthropic's error type for each status /v1/messages answers with; a 5xx not listed is an `api_error`.
ANTHROPIC_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "request_too_large",
    422: "invalid_request_error",
    429: "rate_limit_error",
    529: "overloaded_error",
}


def anthropic_error_answer(error: ApiError) -> tuple[int, bytes]:
    """`error` in Anthropic's shape, `{"type": "error", "error": {"type", "message"}}`, and its status.

    Anthropic's clients know 400, 401, 403, 404, 413, 429, 500 and 529: when every candidate failed for
    now (a 502 worth retrying) or routerweb cannot serve for now (503), the answer is 529
    `overloaded_error`, which they retry; other 5xx are 500 `api_error`.
    """
    status = error.status
    if status >= 500 and status != 529:
        status = 529 if error.retry_after_s is not None else 500
    error_type = ANTHROPIC_ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
    return status, orjson.dumps({"type": "error", "error": {"type": error_type, "message": error.message}})


def body_too_large(limit: int) -> ApiError:
    """The 413 of a request body over `limit` bytes (the API's and the playground's limit)."""
    return ApiError(413, f"The request body is larger than {limit} bytes.", code="body_too_large")
