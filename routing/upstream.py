"""Calling an OpenAI-compatible upstream: one pooled HTTP client per event loop, and typed failures.

Every way a try can fail becomes an `UpstreamFailure` whose `retryable` flag is the fallback rule:
connection errors, timeouts, 408/409/425/429, 5xx, 401/403 and bodies that are not JSON move on to
the next candidate; other 4xx (400, 404, 422, …) mean the request itself is wrong and are returned
to the client as they are. Messages never contain the API key or request headers.
"""

import asyncio
import email.utils
import time
import weakref
from dataclasses import dataclass

import aiohttp
import httpx
import orjson
from httpx_aiohttp import AiohttpTransport

from .registry import ProviderSnap
from .text import text_bounded

RETRYABLE_4XX = frozenset({401, 403, 408, 409, 425, 429})
MAX_ERROR_BODY_BYTES = 64 * 1024

_transports: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_targets: dict[ProviderSnap, tuple[httpx.URL, dict]] = {}

JSON_HEADERS = [(b"content-type", b"application/json"), (b"accept-encoding", b"identity")]
SSE_HEADERS = [*JSON_HEADERS, (b"accept", b"text/event-stream")]


@dataclass(slots=True)
class UpstreamFailure(Exception):
    reason: str
    retryable: bool
    status: int | None = None
    retry_after_s: float | None = None
    key_rejected: bool = False
    # For non-retryable HTTP errors: the upstream's OpenAI error fields, passed on to the client.
    error: dict | None = None

    def __str__(self) -> str:
        return self.reason


def upstream_transport() -> AiohttpTransport:
    """The running loop's httpx transport: keep-alive pooled connections over aiohttp.

    The gateway sends through the transport directly rather than an `httpx.AsyncClient`: it needs
    none of the client's cookies, redirects, auth flows or event hooks, and skipping them (and the
    URL parsing of `build_request`) saves a large share of the per-request CPU.
    """
    loop = asyncio.get_running_loop()
    transport = _transports.get(loop)
    if transport is None:
        limits = httpx.Limits(max_connections=1000, max_keepalive_connections=200, keepalive_expiry=60)
        transport = _transports[loop] = AiohttpTransport(limits=limits)
    return transport


async def upstream_transport_close() -> None:
    transport = _transports.pop(asyncio.get_running_loop(), None)
    if transport is not None:
        await transport.aclose()


async def upstream_send(provider: ProviderSnap, *, body: bytes, api_key: str | None, stream: bool) -> httpx.Response:
    """POST `body` to the provider's chat endpoint; returns a 2xx response whose body is not read yet.

    The caller must `aclose()` the response. Raises UpstreamFailure for every failure.
    """
    url, timeout = _target(provider)
    headers = SSE_HEADERS if stream else JSON_HEADERS
    if api_key:
        headers = [*headers, (b"authorization", f"Bearer {api_key}".encode())]
    request = httpx.Request("POST", url, content=body, headers=headers, extensions={"timeout": timeout})
    try:
        response = await upstream_transport().handle_async_request(request)
    except (TimeoutError, httpx.HTTPError, aiohttp.ClientError, OSError) as exc:
        raise transport_failure(exc, provider) from None
    if response.status_code >= 300:
        try:
            raise await _status_failure(response)
        finally:
            await response.aclose()
    return response


def _target(provider: ProviderSnap) -> tuple[httpx.URL, dict]:
    """The parsed URL and timeouts of a provider, computed once per registry snapshot."""
    target = _targets.get(provider)
    if target is None:
        if len(_targets) > 10_000:  # old snapshots' providers: drop them all, they are cheap to rebuild
            _targets.clear()
        timeout = httpx.Timeout(
            provider.read_timeout_s, connect=provider.connect_timeout_s, pool=provider.connect_timeout_s
        )
        target = _targets[provider] = (httpx.URL(provider.chat_url), timeout.as_dict())
    return target


async def upstream_read_json(response: httpx.Response, provider: ProviderSnap) -> tuple[bytes, dict]:
    """The whole body of a non-streaming answer, raw and parsed; a body that is not a JSON object fails."""
    try:
        raw = await response.aread()
    except httpx.HTTPError as exc:
        raise transport_failure(exc, provider) from None
    finally:
        await response.aclose()
    try:
        parsed = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise UpstreamFailure("invalid JSON from upstream", retryable=True, status=response.status_code) from None
    if not isinstance(parsed, dict) or not isinstance(parsed.get("choices"), list):
        raise UpstreamFailure("upstream answer is not a chat completion", retryable=True, status=response.status_code)
    return raw, parsed


def transport_failure(exc: BaseException, provider: ProviderSnap) -> UpstreamFailure:
    """Describe a connection-level failure in plain words (the aiohttp cause is more precise than httpx's)."""
    cause = exc.__cause__ or exc
    if isinstance(cause, aiohttp.ConnectionTimeoutError) or (isinstance(exc, httpx.ConnectTimeout) and cause is exc):
        reason = f"connect timeout after {provider.connect_timeout_s:g}s"
    elif isinstance(cause, (aiohttp.ServerTimeoutError, asyncio.TimeoutError)) or isinstance(exc, httpx.ReadTimeout):
        reason = f"timeout after {provider.read_timeout_s:g}s"
    elif isinstance(cause, aiohttp.ClientConnectorDNSError):
        reason = "DNS lookup failed"
    elif isinstance(cause, aiohttp.ClientConnectorError):
        reason = f"connection failed ({cause.os_error.strerror or cause.os_error})"
    elif isinstance(cause, aiohttp.ServerDisconnectedError):
        reason = "connection closed by upstream"
    elif isinstance(cause, aiohttp.ClientPayloadError):
        reason = "response broken off by upstream"
    else:
        reason = f"connection error ({type(cause).__name__})"
    return UpstreamFailure(reason, retryable=True)


async def _status_failure(response: httpx.Response) -> UpstreamFailure:
    status = response.status_code
    try:
        raw = await response.aread()
    except httpx.HTTPError:
        raw = b""
    error = _openai_error(raw[:MAX_ERROR_BODY_BYTES], status)
    if status < 400:  # a redirect: the provider's address is wrong or moved, which another candidate may not be
        return UpstreamFailure(f"{status} from upstream (redirect)", retryable=True, status=status)
    if status in RETRYABLE_4XX or status >= 500:
        return UpstreamFailure(
            f"{status} from upstream",
            retryable=True,
            status=status,
            retry_after_s=_retry_after_s(response.headers.get("retry-after")) if status == 429 else None,
            key_rejected=status in (401, 403),
        )
    return UpstreamFailure(f"{status} from upstream", retryable=False, status=status, error=error)


def _openai_error(raw: bytes, status: int) -> dict:
    try:
        parsed = orjson.loads(raw)
    except orjson.JSONDecodeError:
        parsed = None
    if isinstance(parsed, dict) and isinstance(parsed.get("error"), dict):
        error = parsed["error"]
        message = _error_text(error.get("message"), ERROR_MESSAGE_MAX) or f"upstream answered {status}"
        return {"message": message, **{name: _error_text(error.get(name), ERROR_FIELD_MAX) for name in ERROR_FIELDS}}
    text = _error_text(raw.decode("utf-8", "replace").strip(), ERROR_MESSAGE_MAX) or f"upstream answered {status}"
    return {"message": text, "type": "invalid_request_error", "param": None, "code": None}


# An upstream's error fields reach the client, the call row (`code`) and the logs: strings only, bounded.
ERROR_FIELDS = ("type", "param", "code")
ERROR_MESSAGE_MAX = 500
ERROR_FIELD_MAX = 40


def _error_text(value: object, max_length: int) -> str | None:
    """A string field of an upstream error: numbers as their text, anything else None; no NUL, cut to length."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    return text_bounded(value, max_length) or None


def _retry_after_s(value: str | None) -> float | None:
    """Retry-After as seconds: either a number of seconds or an HTTP date."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = email.utils.parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError):
            return None
    return seconds if seconds > 0 else None
