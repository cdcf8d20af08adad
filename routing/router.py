"""The fallback engine: order the candidates, try them one by one, and keep the trace.

Only ordering and attempts live here; what a failure means is decided in upstream.py, circuit
state in circuit.py, and what is recorded in gateway.py.
"""

import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from .circuit import CircuitBreaker, CircuitView
from .errors import ApiError
from .providers.registry import adapter_for
from .registry_rules import kind_label
from .secrets import api_key_env_refusal, provider_api_key
from .snapshot import ModelSnap, Registry
from .strategies import route_order
from .streaming import ClientStream
from .upstream import MAX_EMBEDDINGS_ANSWER_BYTES, UpstreamFailure, upstream_read, upstream_send
from .usage import Usage, UsageProblem, answer_with_cost, embedding_answer_with_cost

logger = logging.getLogger("routerweb.router")
# What a model's usage costs (an exact decimal string), or None: the answer's `usage.cost`.
UsageCost = Callable[[ModelSnap, Usage], str | None]
# One try of the request on a candidate (`chat_attempt` for chat completions, `embeddings_attempt` for
# embeddings); raises UpstreamFailure.
CandidateTry = Callable[[ModelSnap], Awaitable["RouteResult"]]
RETRY_AFTER_S = 1.0  # what a 502 after transient failures suggests to the client


@dataclass(slots=True)
class Attempt:
    """One step of the routing trace: a candidate that was tried or skipped."""

    model: str
    outcome: str  # "ok", "error" or "skipped"
    reason: str = ""
    status: int | None = None
    latency_ms: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "outcome": self.outcome,
            "status": self.status,
            "latency_ms": self.latency_ms,
            "reason": self.reason,
        }

    def describe(self) -> str:
        if self.outcome == "skipped":
            return f"{self.model}: skipped, {self.reason}"
        return f"{self.model}: {self.reason}"


@dataclass(slots=True)
class RouteResult:
    """What the attempts produced, from `model`: the answer for the client (`body`, with its `usage`;
    an OpenAI chat completion for chat completions) or an open stream of events for the client."""

    model: ModelSnap
    body: bytes = b""
    usage: Usage | UsageProblem | None = None
    stream: ClientStream | None = None


@dataclass
class Trace:
    attempts: list[Attempt] = field(default_factory=list)
    upstream_s: float = 0.0  # time spent waiting on upstreams, excluded from routerweb's overhead
    in_flight: ModelSnap | None = None  # the candidate being tried right now

    @property
    def tries(self) -> int:
        return sum(1 for a in self.attempts if a.outcome != "skipped")

    def as_list(self) -> list[dict[str, Any]]:
        return [a.as_dict() for a in self.attempts]

    def stream_broke(self, *, content_chunks: int, reason: str) -> None:
        """The answering attempt's stream failed after it started: its step becomes an error.

        An attempt is "ok" once its stream has started (falling back stops there); if the stream later
        breaks, the call failed, and the trace must not show a success.
        """
        if self.attempts and self.attempts[-1].outcome == "ok":
            step = self.attempts[-1]
            step.outcome = "error"
            step.reason = f"stream broke off after {content_chunks} chunks ({reason})"


def candidates_for(
    registry: Registry,
    requested: str,
    fallback_models: list[str],
    rng: random.Random | None = None,
    *,
    kind: str = "chat",
) -> list[ModelSnap]:
    """The models to try, in order: the route's (or the one model), then `fallback_models` (a route
    among them brings its targets), no repeats.

    Raises ApiError 404 for a name that is neither a model nor a route, and 400 for one whose models
    are of another kind than the endpoint's (`kind`: an embeddings model on chat completions, say).
    """
    route = registry.routes.get(requested)
    if route is not None:
        ordered = route_order(route, rng or random)
    elif requested in registry.models:
        ordered = [registry.models[requested]]
    else:
        raise ApiError(404, f"The model or route {requested!r} does not exist.", code="model_not_found", param="model")
    seen = {m.name for m in ordered}
    for name in fallback_models:
        fallback_route = registry.routes.get(name)
        if fallback_route is not None:
            extra = route_order(fallback_route, rng or random)  # a route falls back to its targets, in its order
        elif name in registry.models:
            extra = [registry.models[name]]
        else:
            message = f"The fallback model or route {name!r} does not exist."
            raise ApiError(404, message, code="model_not_found", param="fallback_models")
        for model in extra:
            if model.name not in seen:
                ordered.append(model)
                seen.add(model.name)
    if not ordered:  # a route saved before routes needed a target (routing/registry_rules.py)
        message = f"The route {requested!r} has no targets: give it one in the admin."
        raise ApiError(502, message, code="route_without_targets", param="model")
    for model in ordered:
        if model.kind != kind:
            raise _wrong_kind(model, requested, kind)
    return ordered


ENDPOINT_OF_KIND = {"chat": "/v1/chat/completions", "embeddings": "/v1/embeddings"}


def _wrong_kind(model: ModelSnap, requested: str, kind: str) -> ApiError:
    via = "" if model.name == requested else f" (through {requested!r})"
    endpoint = ENDPOINT_OF_KIND.get(model.kind, "another endpoint")
    message = (
        f"The model {model.name!r}{via} is {kind_label(model.kind)}, not {kind_label(kind)}: call it on {endpoint}."
    )
    return ApiError(400, message, code="model_kind_mismatch", param="model")


def skip_reason(model: ModelSnap, kind: str = "chat") -> str | None:
    """Why `model` cannot be called at all right now (before its circuit is asked), or None."""
    if not model.enabled:
        return "disabled"
    if kind == "embeddings" and not adapter_for(model.provider.api_format).embeds:
        return f"its provider's API format ({model.provider.api_format}) cannot embed"
    env_name = model.provider.api_key_env
    if env_name:
        refusal = api_key_env_refusal(env_name)
        if refusal is not None:
            return refusal
        if provider_api_key(env_name) is None:
            return f"{env_name} not set"
    return None


async def route_request(
    candidates: list[ModelSnap],
    breaker: CircuitBreaker,
    trace: Trace,
    *,
    attempt: CandidateTry,
    views: dict[str, CircuitView] | None = None,
    kind: str = "chat",
) -> RouteResult:
    """Try `candidates` in order with `attempt` until one answers; fills `trace` as it goes. `views`:
    their circuit state if the caller has read it already. `kind`: the kind of call (a candidate whose
    adapter cannot make it is skipped).

    Raises ApiError: the upstream's own error for a non-retryable failure (e.g. 400), or 502 listing
    every attempt when all candidates failed or were skipped (worth retrying only if one failed or its
    circuit was open, not when each was skipped for its configuration: disabled, no key).
    """
    if views is None:
        views = await breaker.read(candidates)
    transient = False  # a candidate failed or was held back for now: the same request may succeed later
    for model in candidates:
        reason = skip_reason(model, kind)
        if reason is None:
            reason = await breaker.admit(model, views[model.name])
            transient = transient or reason is not None
        if reason:
            trace.attempts.append(Attempt(model.name, "skipped", reason))
            continue
        started = time.perf_counter()
        trace.in_flight = model
        try:
            result = await attempt(model)
        except UpstreamFailure as failure:
            trace.in_flight = None
            elapsed = time.perf_counter() - started
            trace.upstream_s += elapsed
            trace.attempts.append(Attempt(model.name, "error", failure.reason, failure.status, round(elapsed * 1000)))
            if not failure.retryable:
                await breaker.record_success(model, views[model.name])  # it answered; the request was wrong
                raise _client_error(failure) from None
            await _note_failure(breaker, model, views[model.name], failure)
            transient = True
            continue
        trace.in_flight = None
        elapsed = time.perf_counter() - started
        trace.upstream_s += elapsed
        trace.attempts.append(Attempt(model.name, "ok", "ok", 200, round(elapsed * 1000)))
        await breaker.record_success(model, views[model.name])
        return result
    raise ApiError(
        502,
        "All candidates failed: " + "; ".join(a.describe() for a in trace.attempts) + ".",
        code="all_candidates_failed",
        retry_after_s=RETRY_AFTER_S if transient else None,  # skipped for configuration only: retrying cannot help
    )


async def chat_attempt(
    model: ModelSnap,
    *,
    request: dict[str, Any],
    stream: bool,
    client_wants_usage: bool = False,
    usage_cost: UsageCost | None = None,
) -> RouteResult:
    """One try of a chat completions `request` on `model`, through its provider's adapter. With
    `usage_cost`, the answer's usage (the final usage chunk of a stream) carries the call's cost as
    `usage.cost`. Raises UpstreamFailure."""
    adapter = adapter_for(model.provider.api_format)
    api_key = provider_api_key(model.provider.api_key_env)
    body = adapter.request_body(request, model)
    response = await upstream_send(model.provider, adapter, body=body, api_key=api_key, stream=stream)
    if not stream:
        answer = adapter.answer(await upstream_read(response, model.provider))
        body = answer.body
        if usage_cost is not None and type(answer.usage) is Usage:
            body = answer_with_cost(body, usage_cost(model, answer.usage))
        return RouteResult(model, body=body, usage=answer.usage)
    relay = adapter.stream_relay(response, model.provider, client_wants_usage=client_wants_usage)
    if usage_cost is not None and client_wants_usage:
        relay.usage_cost = partial(usage_cost, model)
    try:
        await relay.prime()
    except BaseException:
        await relay.aclose()
        raise
    return RouteResult(model, stream=relay)


async def embeddings_attempt(
    model: ModelSnap, *, request: dict[str, Any], usage_cost: UsageCost | None = None
) -> RouteResult:
    """One try of an embeddings `request` on `model` (its adapter `embeds`); with `usage_cost`, the
    answer's usage carries the call's cost. Raises UpstreamFailure."""
    adapter = adapter_for(model.provider.api_format)
    body = adapter.embeddings_body(request, model)
    api_key = provider_api_key(model.provider.api_key_env)
    response = await upstream_send(model.provider, adapter, body=body, api_key=api_key, stream=False, kind="embeddings")
    answer = adapter.embeddings_answer(await upstream_read(response, model.provider, limit=MAX_EMBEDDINGS_ANSWER_BYTES))
    body = answer.body
    if usage_cost is not None and type(answer.usage) is Usage:
        body = embedding_answer_with_cost(body, answer.usage_end, usage_cost(model, answer.usage))
    return RouteResult(model, body=body, usage=answer.usage)


async def _note_failure(breaker: CircuitBreaker, model: ModelSnap, view: CircuitView, failure: UpstreamFailure) -> None:
    logger.info("fallback: %s failed (%s); trying the next candidate", model.name, failure.reason)
    if failure.key_rejected:
        await breaker.open_provider(model.provider)
    await breaker.record_failure(model, view, retry_after_s=failure.retry_after_s)


def _client_error(failure: UpstreamFailure) -> ApiError:
    error = failure.error or {}
    return ApiError(
        failure.status or 400,
        str(error.get("message") or failure.reason),
        code=error.get("code"),
        param=error.get("param"),
        type=error.get("type"),
    )
