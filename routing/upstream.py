"""Sending a request upstream: one pooled HTTP transport per event loop, and typed failures.

Every way a try can fail becomes an `UpstreamFailure` whose `retryable` flag is the fallback rule:
connection errors and timeouts here; what an HTTP error status or a body means is decided by the
provider's adapter (routing/providers/). Messages never contain the API key or request headers.
"""

import asyncio
import contextvars
import email.utils
import time
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING

import aiohttp
import httpx
from django.conf import settings
from httpx_aiohttp import AiohttpTransport

from .snapshot import ProviderSnap

if TYPE_CHECKING:
    from .providers.base import ProviderAdapter

RETRYABLE_4XX = frozenset({401, 403, 408, 409, 425, 429})
MAX_ERROR_BODY_BYTES = 64 * 1024
MAX_ANSWER_BYTES = 32 << 20  # a non-streamed answer; a stream is relayed chunk by chunk, never held
# An embeddings answer is held whole too, and a full batch is large: 2,048 inputs × 3,072 floats as JSON
# text (about 14 bytes each, as OpenAI writes them) is about 88 MB.
MAX_EMBEDDINGS_ANSWER_BYTES = 128 << 20

_transports: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_targets: dict[tuple[ProviderSnap, str, str] | tuple[ProviderSnap, str, str, str], tuple[httpx.URL, dict]] = {}

# The (host, port) the request being served came in on (the ASGI scope's `server`), set by
# routerweb/asgi.py: a provider whose base URL is a path ("/demo/v1") is routerweb itself, reached at
# that address, so that no configured port or URL can point it at the wrong place.
serving_address: contextvars.ContextVar[tuple | None] = contextvars.ContextVar("serving_address", default=None)


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


async def upstream_send(
    provider: ProviderSnap,
    adapter: "ProviderAdapter",
    *,
    body: bytes,
    api_key: str | None,
    stream: bool,
    kind: str = "chat",
    url_suffix: str = "",
    extra_headers: list[tuple[bytes, bytes]] | None = None,
) -> httpx.Response:
    """POST `body` to the provider's endpoint for `kind` (chat or embeddings), plus `url_suffix`
    (another endpoint under it, such as Anthropic's `/count_tokens`), with the adapter's headers and
    `extra_headers` (checked ones a client passes on); returns a 2xx response whose body is not read yet.

    The caller must `aclose()` the response. Raises UpstreamFailure for every failure.
    """
    url, timeout = _target(provider, adapter, kind, url_suffix)
    headers = adapter.headers(api_key, stream=stream)
    if extra_headers:
        headers = [*headers, *extra_headers]
    request = httpx.Request("POST", url, content=body, headers=headers, extensions={"timeout": timeout})
    try:
        response = await upstream_transport().handle_async_request(request)
    except (TimeoutError, httpx.HTTPError, aiohttp.ClientError, OSError) as exc:
        raise transport_failure(exc, provider) from None
    if response.status_code >= 300:
        try:
            try:
                raw = await _read_at_most(response, MAX_ERROR_BODY_BYTES)
            except httpx.HTTPError:
                raw = b""
            raise adapter.failure(response.status_code, raw, response.headers)
        finally:
            await response.aclose()
    return response


def _target(
    provider: ProviderSnap, adapter: "ProviderAdapter", kind: str = "chat", url_suffix: str = ""
) -> tuple[httpx.URL, dict]:
    """The parsed URL and timeouts of a provider's endpoint for `kind` (plus `url_suffix`), computed
    once per registry snapshot (and, for a provider on routerweb itself, per address it serves on)."""
    base_url = provider.base_url
    key: tuple[ProviderSnap, str, str] | tuple[ProviderSnap, str, str, str] = (provider, kind, url_suffix)
    if base_url.startswith("/"):
        base_url = own_origin() + base_url
        key = (provider, kind, url_suffix, base_url)
    target = _targets.get(key)
    if target is None:
        if len(_targets) > 10_000:  # old snapshots' providers: drop them all, they are cheap to rebuild
            _targets.clear()
        timeout = httpx.Timeout(
            provider.read_timeout_s, connect=provider.connect_timeout_s, pool=provider.connect_timeout_s
        )
        target = _targets[key] = (httpx.URL(adapter.endpoint_url(base_url, kind) + url_suffix), timeout.as_dict())
    return target


def own_origin() -> str:
    """routerweb's own address as seen from this process: the address the current request came in on
    (a wildcard host becomes the loopback), else ROUTERWEB_PUBLIC_URL (outside a request, a Unix socket)."""
    server = serving_address.get()
    if server and server[1]:
        host = server[0]
        if host in ("", "0.0.0.0"):
            host = "127.0.0.1"
        elif host == "::":
            host = "::1"
        return f"http://[{host}]:{server[1]}" if ":" in host else f"http://{host}:{server[1]}"
    return settings.ROUTERWEB_PUBLIC_URL.rstrip("/")


async def upstream_read(response: httpx.Response, provider: ProviderSnap, *, limit: int = MAX_ANSWER_BYTES) -> bytes:
    """The whole body of a non-streaming answer (a body over `limit` bytes fails: retryable)."""
    try:
        raw = await _read_at_most(response, limit + 1)
    except httpx.HTTPError as exc:
        raise transport_failure(exc, provider) from None
    finally:
        await response.aclose()
    if len(raw) > limit:
        raise UpstreamFailure(f"answer larger than {limit} bytes", retryable=True)
    return raw


async def _read_at_most(response: httpx.Response, limit: int) -> bytes:
    """The body's first `limit` bytes (all of it when shorter), without reading the rest into memory."""
    chunks, size = [], 0
    async for chunk in response.aiter_raw():
        chunks.append(chunk)
        size += len(chunk)
        if size >= limit:
            break
    return b"".join(chunks)[:limit]


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


def retry_after_s(value: str | None) -> float | None:
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
