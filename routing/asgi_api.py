"""A lean ASGI handler for the /v1/ API: Django views and URL resolving, without the page stack.

Django's ASGIHandler spends real CPU per request on what the API does not use: the middleware
chain (sessions, CSRF, messages, auth), a spooled temp file for the body, and `request_started` /
`request_finished` signals whose receivers each cost a thread hop. This handler keeps what the API
needs: the body read into memory with a size limit (413 early), an `ASGIRequest`, URL resolving
against `routing.api_urls`, the async view, and cancellation of the view when the client goes
away (which closes the upstream request). Any error still answers in OpenAI's JSON shape (in
Anthropic's on /v1/messages).

Of the page stack's protections, the two that matter to a JSON API are kept here: the `Host` header
is checked against ALLOWED_HOSTS (400, as CommonMiddleware does for pages) and every response carries
`X-Content-Type-Options: nosniff` (as SecurityMiddleware does). The others concern browsers and
cookies (CSRF, sessions, frames), which the API does not use.
"""

import asyncio
import io
import logging

from django.conf import settings
from django.core.exceptions import DisallowedHost
from django.core.handlers.asgi import ASGIRequest
from django.http import HttpResponse
from django.urls import Resolver404, resolve

from .errors import ApiError, body_too_large, error_response

logger = logging.getLogger("routerweb.api")
API_URLCONF = "routing.api_urls"
MESSAGES_PATH = "/v1/messages"  # Anthropic's Messages API: its errors have Anthropic's shape


class BodyTooLarge(Exception):
    pass


class ClientGone(Exception):
    pass


class ApiHandler:
    def __init__(self) -> None:
        self.max_body = settings.ROUTERWEB_MAX_BODY_BYTES

    async def __call__(self, scope, receive, send) -> None:
        try:
            body = await self._read_body(scope, receive)
        except BodyTooLarge:
            anthropic = scope["path"].startswith(MESSAGES_PATH)
            await _send_response(send, error_response(body_too_large(self.max_body), anthropic=anthropic))
            return
        except ClientGone:
            return
        # The response is produced in this task; a small watcher cancels it if the client goes away,
        # which closes the upstream request and records the call (one extra task, not two).
        this_task = asyncio.current_task()
        client_gone = asyncio.Event()
        watcher = asyncio.create_task(_cancel_on_disconnect(receive, this_task, client_gone))
        try:
            await self._respond(scope, body, send)
        except asyncio.CancelledError:
            if not client_gone.is_set():
                raise  # cancelled from outside (server shutdown): let it propagate
            this_task.uncancel()
        finally:
            watcher.cancel()

    async def _read_body(self, scope, receive) -> bytes:
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > self.max_body:
                raise BodyTooLarge
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ClientGone
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                raise BodyTooLarge
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    async def _respond(self, scope, body: bytes, send) -> None:
        response = await self._view_response(scope, body)
        await _send_response(send, response)

    async def _view_response(self, scope, body: bytes) -> HttpResponse:
        request = ASGIRequest(scope, io.BytesIO(body))
        anthropic = request.path_info.startswith(MESSAGES_PATH)
        try:
            request.get_host()  # validated against ALLOWED_HOSTS
        except DisallowedHost:
            return error_response(ApiError(400, "Invalid Host header.", code="invalid_host"), anthropic=anthropic)
        try:
            match = resolve(request.path_info, urlconf=API_URLCONF)
        except Resolver404:
            error = ApiError(404, f"Unknown API path {request.path_info}.", code="not_found")
            return error_response(error, anthropic=anthropic)
        try:
            return await match.func(request, *match.args, **match.kwargs)
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("unhandled error on %s", request.path_info)
            error = ApiError(500, "Internal error in routerweb.", code="internal_error")
            return error_response(error, anthropic=anthropic)


async def _cancel_on_disconnect(receive, task: asyncio.Task, client_gone: asyncio.Event) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
    client_gone.set()
    task.cancel()


async def _send_response(send, response: HttpResponse) -> None:
    headers = [(name.encode("latin-1"), value.encode("latin-1")) for name, value in response.items()]
    headers.append((b"x-content-type-options", b"nosniff"))
    if not response.streaming:
        body = response.content
        headers.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": response.status_code, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        return
    # Iterate the view's own stream object (not Django's wrapper around it) and always close it, even
    # when cancelled before the first chunk: closing it closes the upstream request and records the call.
    events = getattr(response, "events", None) or aiter(response.streaming_content)
    try:
        await send({"type": "http.response.start", "status": response.status_code, "headers": headers})
        async for chunk in events:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
    finally:
        await events.aclose()
    await send({"type": "http.response.body", "body": b""})
