"""Errors in OpenAI's wire shape: {"error": {"message", "type", "param", "code"}}, with the headers
that tell a client whether trying again can help (`error_headers`)."""

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


def error_response(error: ApiError) -> HttpResponse:
    """The HTTP response of `error`, on every surface that answers in OpenAI's shape."""
    return HttpResponse(
        error.body(), status=error.status, content_type="application/json", headers=error_headers(error)
    )


def body_too_large(limit: int) -> ApiError:
    """The 413 of a request body over `limit` bytes (the API's and the playground's limit)."""
    return ApiError(413, f"The request body is larger than {limit} bytes.", code="body_too_large")
