"""The browser playground: the page and its session-authenticated JSON endpoints (thin views).

The chat endpoint runs `chat_completion_run`, the code path of /v1/chat/completions (same fallback,
budgets and call row), attributed to the logged-in user instead of an API key, and answers with the
API's statuses and OpenAI error shapes. These endpoints sit behind Django's full middleware stack:
CSRF is enforced by CsrfViewMiddleware, whose failures `csrf_failure` turns into the same JSON shape.
No API key, routerweb's or a provider's, is ever involved or put in the page.
"""

import asyncio
from collections.abc import Awaitable, Callable
from functools import wraps

import orjson
from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.views import csrf

from ..errors import ApiError, body_too_large, error_response
from ..gateway import CallContext, chat_completion_run
from ..playground import (
    call_detail_get,
    default_choice,
    playground_choices,
    stored_call_get,
    vote_as_dict,
    vote_record,
    vote_request_parse,
)
from ..runtime import runtime_of
from .api import JSON, gateway_http_response

JSON_ERROR_VIEW_PREFIX = "playground:api-"

SessionView = Callable[..., Awaitable[HttpResponse]]


@login_required
async def playground_page(request: HttpRequest) -> HttpResponse:
    runtime = runtime_of(request)
    registry = await runtime.registry.get()
    models = list(registry.models.values())
    views = await runtime.breaker.read(models) if models else {}
    circuit_reasons = {m.name: reason for m in models if (reason := runtime.breaker.open_reason(m, views[m.name]))}
    groups = playground_choices(registry=registry, circuit_reasons=circuit_reasons)
    context = {
        "nav": "playground",
        "groups": groups,
        "default_target": default_choice(groups),
        "api_url": request.build_absolute_uri("/v1"),  # for "view as code"
    }
    return TemplateResponse(request, "routing/playground.html", context)


def session_api(method: str) -> Callable[[SessionView], SessionView]:
    """For the page's JSON endpoints: another method → 405, no session → 401, an ApiError → its JSON.

    The view is called as `view(request, user, **url_kwargs)` with the logged-in user.
    """

    def decorator(view: SessionView) -> SessionView:
        @wraps(view)
        async def wrapper(request: HttpRequest, **kwargs) -> HttpResponse:
            try:
                if request.method != method:
                    raise ApiError(405, f"Use {method} for {request.path}.", code="method_not_allowed")
                user = await request.auser()
                if not user.is_authenticated:
                    raise ApiError(401, "You are not logged in: log in to use the playground.", code="login_required")
                return await view(request, user, **kwargs)
            except ApiError as error:
                return error_response(error)

        return wrapper

    return decorator


@session_api("POST")
async def chat(request: HttpRequest, user) -> HttpResponse:
    raw_body = _request_body(request)
    result = await chat_completion_run(
        runtime=runtime_of(request),
        raw_body=raw_body,
        caller=lambda registry: CallContext(source="playground", user_id=user.id),
    )
    return gateway_http_response(result)


# How long GET …/calls/<id>?wait=<s> may wait for the row: it lands about a second after the answer.
CALL_WAIT_MAX_S = 5.0
CALL_WAIT_STEP_S = 0.1


@session_api("GET")
async def call_detail(request: HttpRequest, user, request_id: str) -> HttpResponse:
    """The recorded call, or 404. With `?wait=<seconds>` (the page, right after an answer), the view
    waits up to that long for the row, then answers 202 `{"recorded": false}` if it is still not
    there: a call may not be recorded yet, which is no error (and logs none in the browser). The same
    202 answers an id that is someone else's or does not exist, so it tells nothing about them."""
    wait_s = _wait_seconds(request.GET.get("wait"))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_s
    meter = runtime_of(request).meter
    while (detail := await sync_to_async(call_detail_get)(meter=meter, user_id=user.id, request_id=request_id)) is None:
        if loop.time() >= deadline:
            break
        await asyncio.sleep(CALL_WAIT_STEP_S)
    if detail is not None:
        return HttpResponse(orjson.dumps(detail), content_type=JSON)
    if wait_s > 0:
        return HttpResponse(orjson.dumps({"request_id": request_id, "recorded": False}), status=202, content_type=JSON)
    raise ApiError(404, f"No call {request_id!r} of yours is recorded (yet).", code="call_not_found")


def _wait_seconds(raw: str | None) -> float:
    if raw is None:
        return 0.0
    try:
        value = float(raw)
    except ValueError:
        raise ApiError(400, "wait must be a number of seconds.", code="invalid_value", param="wait") from None
    if not 0 <= value <= CALL_WAIT_MAX_S:
        raise ApiError(400, f"wait must be 0 to {CALL_WAIT_MAX_S:g} seconds.", code="invalid_value", param="wait")
    return value


@session_api("GET")
async def stored_call(request: HttpRequest, user, request_id: str) -> HttpResponse:
    """A recorded call with its conversation and parameters, to open in the page or replay: the calls
    the dashboard would show this user (their own, or everyone's with the spend permission). 404 for
    a call that does not exist or is someone else's, alike."""
    meter = runtime_of(request).meter
    stored = await sync_to_async(stored_call_get)(meter=meter, viewer=user, request_id=request_id)
    if stored is None:
        raise ApiError(404, "No call with this request id that you may see is recorded.", code="call_not_found")
    if not stored["body_stored"]:
        message = "This call's conversation was not stored (body storage is off for it), so it cannot be opened."
        raise ApiError(404, message, code="body_not_stored")
    return HttpResponse(orjson.dumps(stored), content_type=JSON)


@session_api("POST")
async def votes(request: HttpRequest, user) -> HttpResponse:
    vote = vote_request_parse(_request_body(request))
    stored, created = await sync_to_async(vote_record)(meter=runtime_of(request).meter, user=user, vote=vote)
    return HttpResponse(orjson.dumps(vote_as_dict(stored)), status=201 if created else 200, content_type=JSON)


def csrf_failure(request: HttpRequest, reason: str = "") -> HttpResponse:
    """settings.CSRF_FAILURE_VIEW: the playground's JSON endpoints answer 403 in OpenAI's shape, pages as usual."""
    match = request.resolver_match
    if match is not None and match.view_name.startswith(JSON_ERROR_VIEW_PREFIX):
        message = f"CSRF check failed ({reason}). Reload the page and try again."
        return error_response(ApiError(403, message, code="csrf_failed"))
    return csrf.csrf_failure(request, reason=reason)


def _request_body(request: HttpRequest) -> bytes:
    """The body, within the API's size limit (and Django's upload limit): else ApiError 413 as on /v1/."""
    limit = min(settings.ROUTERWEB_MAX_BODY_BYTES, settings.DATA_UPLOAD_MAX_MEMORY_SIZE or float("inf"))
    try:
        body = request.body
    except RequestDataTooBig:
        body = None
    if body is None or len(body) > limit:
        raise body_too_large(limit)
    return body
