"""The API: thin views over routing.gateway (chat completions), routing.messages (Anthropic's
Messages API) and routing.embeddings. Served by routing.asgi_api's lean handler."""

from collections.abc import Awaitable, Callable
from itertools import chain

import orjson
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse

from ..auth import api_key_authenticate, api_key_authorization
from ..embeddings import embeddings_run
from ..errors import ApiError, error_response
from ..gateway import CallContext, Caller, GatewayResponse, chat_completion_run, registry_checked_get
from ..messages import messages_count_tokens as count_tokens_run
from ..messages import messages_native_headers, messages_run
from ..runtime import runtime_of
from ..snapshot import KeySnap, Registry

JSON = "application/json"


async def chat_completions(request: HttpRequest) -> HttpResponse:
    if request.method != "POST":
        return error_response(ApiError(405, "Use POST for /v1/chat/completions.", code="method_not_allowed"))
    result = await chat_completion_run(runtime=runtime_of(request), raw_body=request.body, caller=_api_caller(request))
    return gateway_http_response(result)


async def embeddings(request: HttpRequest) -> HttpResponse:
    if request.method != "POST":
        return error_response(ApiError(405, "Use POST for /v1/embeddings.", code="method_not_allowed"))
    result = await embeddings_run(runtime=runtime_of(request), raw_body=request.body, caller=_api_caller(request))
    return gateway_http_response(result)


def _api_caller(request: HttpRequest) -> Caller:
    """Who calls: the routerweb key in the Authorization header (checked against each registry tried)."""
    authorization = request.headers.get("Authorization", "")
    cache_header = request.headers.get("X-Router-Cache", "")

    def caller(registry: Registry) -> CallContext:
        key = api_key_authenticate(registry.keys_by_hash, authorization)
        return CallContext(source="api", key=key, user_id=key.user_id, cache_header=cache_header)

    return caller


async def messages(request: HttpRequest) -> HttpResponse:
    """POST /v1/messages: Anthropic's Messages API (`anthropic-version` accepted, not required)."""
    if request.method != "POST":
        return error_response(ApiError(405, "Use POST for /v1/messages.", code="method_not_allowed"), anthropic=True)
    result = await _messages_call(request, messages_run)
    return result if isinstance(result, HttpResponse) else gateway_http_response(result)


async def messages_count_tokens(request: HttpRequest) -> HttpResponse:
    """POST /v1/messages/count_tokens."""
    if request.method != "POST":
        error = ApiError(405, "Use POST for /v1/messages/count_tokens.", code="method_not_allowed")
        return error_response(error, anthropic=True)
    result = await _messages_call(request, count_tokens_run)
    return result if isinstance(result, HttpResponse) else gateway_http_response(result)


async def _messages_call(
    request: HttpRequest, run: Callable[..., Awaitable[GatewayResponse]]
) -> GatewayResponse | HttpResponse:
    """`run` (a Messages API endpoint) for the request; its headers are checked first, once: a bad one
    is answered here, never taken for a key the registry might have missed."""
    try:
        native_headers = messages_native_headers(request.headers.get("anthropic-beta", ""))
    except ApiError as error:
        return error_response(error, anthropic=True)
    authorization = api_key_authorization(
        x_api_key=request.headers.get("x-api-key", ""), authorization=request.headers.get("Authorization", "")
    )

    def caller(registry: Registry) -> CallContext:
        key = api_key_authenticate(registry.keys_by_hash, authorization)
        return CallContext(source="api", key=key, user_id=key.user_id, native_headers=native_headers)

    return await run(runtime=runtime_of(request), raw_body=request.body, caller=caller)


async def models_list(request: HttpRequest) -> HttpResponse:
    """GET /v1/models: the enabled models and the routes this key may use."""
    objects = await _models_for_key(request)
    if isinstance(objects, HttpResponse):
        return objects
    data = sorted(objects.values(), key=lambda item: item["id"])
    return HttpResponse(orjson.dumps({"object": "list", "data": data}), content_type=JSON)


async def model_retrieve(request: HttpRequest, model_id: str) -> HttpResponse:
    """GET /v1/models/{id}: one model or route, as the SDK's `models.retrieve` expects."""
    objects = await _models_for_key(request)
    if isinstance(objects, HttpResponse):
        return objects
    if model_id not in objects:
        message = f"The model or route {model_id!r} does not exist."
        return error_response(ApiError(404, message, code="model_not_found", param="model"))
    return HttpResponse(orjson.dumps(objects[model_id]), content_type=JSON)


async def _models_for_key(request: HttpRequest) -> dict[str, dict] | HttpResponse:
    """The model objects the request's key may see, or the error response (405, 401)."""
    if request.method != "GET":
        return error_response(ApiError(405, f"Use GET for {request.path}.", code="method_not_allowed"))
    authorization = request.headers.get("Authorization", "")
    runtime = runtime_of(request)
    try:
        registry = await registry_checked_get(runtime)
        try:
            key = api_key_authenticate(registry.keys_by_hash, authorization)
        except ApiError:  # perhaps a key created a moment ago by another process
            registry = await registry_checked_get(runtime, after_miss=True)
            key = api_key_authenticate(registry.keys_by_hash, authorization)
    except ApiError as error:
        return error_response(error)
    return _model_objects(registry, key)


def _model_objects(registry: Registry, key: KeySnap) -> dict[str, dict]:
    """OpenAI's model objects, plus `kind` (chat or embeddings: the endpoint that calls it), which the
    SDKs keep as an extra field."""
    objects = {
        m.name: {"id": m.name, "object": "model", "created": 0, "owned_by": m.provider.name, "kind": m.kind}
        for m in registry.models.values()
        if m.enabled and key.allows(m.name)
    }
    for route in registry.routes.values():
        if key.allows(route.name):
            objects[route.name] = {
                "id": route.name,
                "object": "model",
                "created": 0,
                "owned_by": "routerweb-route",
                "kind": route.kind,
            }
    return objects


class _GatewayHeaders:
    """A gateway answer's own headers (request id, model, attempts, overhead, rate limits, cache, retry:
    values routerweb makes, never a client's or an upstream's), sent as they are by whichever handler
    sends the response (both read `items()`), past Django's per-header checks: those cost as much as
    admitting a rate-limited call (docs/benchmarks.md)."""

    gateway_headers: dict[str, str]

    def items(self):
        return chain(super().items(), self.gateway_headers.items())


class GatewayJsonResponse(_GatewayHeaders, HttpResponse):
    pass


class SseResponse(_GatewayHeaders, StreamingHttpResponse):
    """A server-sent-event stream; `events` is the source generator, which the API handler iterates itself."""

    def __init__(self, events, **kwargs):
        super().__init__(events, content_type="text/event-stream", **kwargs)
        self.events = events


def gateway_http_response(result: GatewayResponse) -> HttpResponse:
    if result.stream is not None:
        response = SseResponse(result.stream)
        response["Cache-Control"] = "no-cache"
        response["X-Accel-Buffering"] = "no"
    else:
        response = GatewayJsonResponse(result.body, status=result.status, content_type=JSON)
    response.gateway_headers = result.headers
    return response
