"""The playground's reads and writes: the grouped model picker, one call's trace, compare-mode votes.

The chat itself goes through `routing.gateway.chat_completion_run` like the API; nothing here calls
an upstream.
"""

import re
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser

from .demo_provider import PREFIX as DEMO_PREFIX
from .metering import Meter, RecordedCall
from .models import ModelEndpoint, PreferenceVote
from .router import Attempt, skip_reason
from .schemas import invalid_param, json_object_parse
from .snapshot import ModelSnap, Registry

COMPARE_MIN_COLUMNS, COMPARE_MAX_COLUMNS = 2, 4
# A call's request id: routerweb issues "req_" and 32 hex digits; imported rows use letters, digits,
# "_" and "-" too. At most the 40 characters a call row holds.
REQUEST_ID = re.compile(r"[A-Za-z0-9_-]{1,40}")


# ---------------------------------------------------------------------------- the model picker


@dataclass(frozen=True, slots=True)
class TargetChoice:
    name: str
    note: str  # a route's targets, or why a model would be skipped right now
    usable: bool  # at least one candidate can be called now
    reason: str = ""  # why it is not usable (empty when it is)
    # Its first callable candidate needs a key that is set, or is the built-in demo model: it is
    # expected to answer. A keyless model on some server (a local Ollama) may well not be running.
    dependable: bool = False


@dataclass(frozen=True, slots=True)
class ChoiceGroup:
    label: str
    is_route: bool
    choices: tuple[TargetChoice, ...]
    for_chat: bool = True  # False: embeddings models and routes, shown (disabled) but never a chat target


NOT_FOR_CHAT = "an embeddings model: call it on /v1/embeddings"


def candidate_unavailable(model: ModelSnap, *, circuit_reasons: Mapping[str, str]) -> str | None:
    """Why the router would skip `model` now (disabled, key not set, demo provider off, circuit open), or None."""
    reason = skip_reason(model) or circuit_reasons.get(model.name)
    if reason is None and is_demo_provider(model) and not settings.ROUTERWEB_DEMO_PROVIDER:
        reason = "the demo provider is off (ROUTERWEB_DEMO_PROVIDER)"
    return reason


def is_demo_provider(model: ModelSnap) -> bool:
    return model.provider.base_url.rstrip("/").endswith(DEMO_PREFIX)


def playground_choices(*, registry: Registry, circuit_reasons: Mapping[str, str] | None = None) -> list[ChoiceGroup]:
    """What the page offers: one group of routes first, then the models grouped by provider, all by name,
    then the embeddings models and routes (which the chat page cannot call: listed, disabled, so that
    the registry shows whole).

    Unavailable models and routes (no candidate that can be called now) are listed too, marked with
    the reason, so that their skip can be seen in the attempt chain. `circuit_reasons`: model name →
    why its circuit skips it now.
    """
    reasons = circuit_reasons or {}
    unavailable = {name: candidate_unavailable(m, circuit_reasons=reasons) for name, m in registry.models.items()}
    groups = []
    chat_routes = [route for route in registry.routes.values() if route.kind == "chat"]
    if chat_routes:
        routes = []
        for route in sorted(chat_routes, key=lambda r: r.name):
            models = [model for model, _ in route.targets]
            callable_models = [m for m in models if unavailable[m.name] is None]
            steps = [m.name if unavailable[m.name] is None else f"{m.name} ({unavailable[m.name]})" for m in models]
            note = " → ".join(steps) if callable_models else "no candidate can answer: " + "; ".join(steps)
            dependable = bool(callable_models) and _dependable(callable_models[0])
            reason = "" if callable_models else "no candidate can answer"
            routes.append(TargetChoice(route.name, note, bool(callable_models), reason, dependable))
        groups.append(ChoiceGroup("Routes", is_route=True, choices=tuple(routes)))
    by_provider: dict[str, list[TargetChoice]] = {}
    for model in sorted(registry.models.values(), key=lambda m: m.name):
        if model.kind != "chat":
            continue
        reason = unavailable[model.name]
        note = f"{model.provider.name}: {reason}" if reason else model.provider.name
        choice = TargetChoice(model.name, note, reason is None, reason or "", reason is None and _dependable(model))
        by_provider.setdefault(model.provider.name, []).append(choice)
    for provider in sorted(by_provider):
        groups.append(ChoiceGroup(f"Models · {provider}", is_route=False, choices=tuple(by_provider[provider])))
    others = sorted(
        [
            *(r.name for r in registry.routes.values() if r.kind != "chat"),
            *(m.name for m in registry.models.values() if m.kind != "chat"),
        ]
    )
    if others:
        choices = tuple(TargetChoice(name, NOT_FOR_CHAT, False, NOT_FOR_CHAT) for name in others)
        groups.append(ChoiceGroup("Embeddings · not for chat", is_route=False, choices=choices, for_chat=False))
    return groups


def _dependable(model: ModelSnap) -> bool:
    return bool(model.provider.api_key_env) or is_demo_provider(model)


def default_choice(groups: list[ChoiceGroup]) -> str | None:
    """The page's first selection: a target that can answer. The first dependable one (routes first),
    else the first usable one; None when nothing is configured."""
    choices = [choice for group in groups for choice in group.choices]
    return next((c.name for c in choices if c.dependable), None) or next((c.name for c in choices if c.usable), None)


# ---------------------------------------------------------------------------- one call's trace


def attempt_text(attempt: dict[str, Any]) -> str:
    """One step of the attempt chain in plain words, e.g. "claude-sonnet-4: 503 from upstream after 120 ms"."""
    step = Attempt(**{f.name: attempt[f.name] for f in fields(Attempt) if f.name in attempt})
    text = step.describe()
    if step.outcome != "skipped":
        text += f" after {step.latency_ms} ms"
    return text


def tokens_per_second(*, completion_tokens: int, latency_ms: int, ttft_ms: int | None, stream: bool) -> float | None:
    """Generation speed: for a stream, completion tokens over the time after the first token; for an
    answer sent whole, over the whole call (its "first token" is the whole answer, so the time after
    it says nothing about speed)."""
    window_ms = latency_ms - ttft_ms if stream and ttft_ms is not None and latency_ms > ttft_ms else latency_ms
    if completion_tokens <= 0 or window_ms <= 0:
        return None
    return round(completion_tokens * 1000 / window_ms, 1)


def call_detail_get(*, meter: Meter, user_id: int, request_id: str) -> dict[str, Any] | None:
    """The recorded call `request_id` if it is `user_id`'s, as the page shows it; None otherwise (or not yet)."""
    if not REQUEST_ID.fullmatch(request_id):
        return None
    call = meter.recorded_calls(user_id=user_id, request_ids=[request_id]).get(request_id)
    return None if call is None else call_detail(call)


def call_detail(call: RecordedCall) -> dict[str, Any]:
    """A recorded call as the page shows it: its fields, speed and the attempt chain in words."""
    detail = {name: getattr(call, name) for name in CALL_DETAIL_FIELDS}
    detail["tokens_per_second"] = tokens_per_second(
        completion_tokens=call.completion_tokens, latency_ms=call.latency_ms, ttft_ms=call.ttft_ms, stream=call.stream
    )
    detail["attempts"] = [{**attempt, "text": attempt_text(attempt)} for attempt in call.attempts]
    return detail


CALL_DETAIL_FIELDS = (
    "request_id",
    "requested",
    "model",
    "provider",
    "status",
    "http_status",
    "error_code",
    "stream",
    "prompt_tokens",
    "cached_tokens",
    "cache_write_tokens",
    "completion_tokens",
    "usage_estimated",
    "cost_usd",
    "unpriced",
    "latency_ms",
    "ttft_ms",
    "client_disconnected",
    "price_text",
)


# ---------------------------------------------------------------------------- a stored call, to open or replay


def stored_call_get(*, meter: Meter, viewer: AbstractBaseUser, request_id: str) -> dict[str, Any] | None:
    """The stored call `request_id` (its detail and, when stored, its conversation and parameters) if
    `viewer` may see it under the meter's access rules; None otherwise."""
    if not REQUEST_ID.fullmatch(request_id):
        return None
    stored = meter.stored_call(viewer=viewer, request_id=request_id)
    if stored is None:
        return None
    return {
        "call": call_detail(stored.call),
        "own": stored.own,
        "body_stored": stored.body_stored,
        "messages": stored.messages,
        "parameters": stored.parameters,
        "answer": stored.answer,
        "tool_calls": stored.tool_calls,
        "request_truncated": stored.request_truncated,
        "answer_truncated": stored.answer_truncated,
    }


# ---------------------------------------------------------------------------- compare-mode votes


@dataclass(frozen=True, slots=True)
class VoteRequest:
    compared: list[str]
    request_ids: list[str]
    chosen: str


def vote_request_parse(raw: bytes) -> VoteRequest:
    """Check a vote body `{"compared": [names], "request_ids": [ids], "chosen": name}`; raises ApiError(400)."""
    body = json_object_parse(raw)
    compared, request_ids, chosen = body.get("compared"), body.get("request_ids"), body.get("chosen")
    if (
        not isinstance(compared, list)
        or not COMPARE_MIN_COLUMNS <= len(compared) <= COMPARE_MAX_COLUMNS
        or not all(isinstance(name, str) and name and name.isprintable() for name in compared)
        or len(set(compared)) != len(compared)
    ):
        raise invalid_param(
            "compared", f"must list {COMPARE_MIN_COLUMNS} to {COMPARE_MAX_COLUMNS} different model or route names"
        )
    if (
        not isinstance(request_ids, list)
        or len(request_ids) != len(compared)
        or not all(isinstance(rid, str) and REQUEST_ID.fullmatch(rid) for rid in request_ids)
        or len(set(request_ids)) != len(request_ids)
    ):
        raise invalid_param("request_ids", "must give the request id of each compared column, in the same order")
    if chosen not in compared:
        raise invalid_param("chosen", "must be one of the compared names")
    return VoteRequest(compared=compared, request_ids=request_ids, chosen=chosen)


def vote_record(*, meter: Meter, user: AbstractBaseUser, vote: VoteRequest) -> tuple[PreferenceVote, bool]:
    """Store `user`'s preference for one comparison; returns (vote, created).

    Every column must be one of the user's own recorded calls, made for that column's name, and the
    chosen column must have answered; otherwise ApiError(400). Voting again on the same comparison
    replaces the earlier choice.
    """
    calls = meter.recorded_calls(user_id=user.pk, request_ids=vote.request_ids)
    for name, request_id in zip(vote.compared, vote.request_ids, strict=True):
        call = calls.get(request_id)
        if call is None or call.requested != name:
            raise invalid_param("request_ids", f"{request_id!r} is not one of your calls to {name!r}")
    chosen_call = calls[vote.request_ids[vote.compared.index(vote.chosen)]]
    if chosen_call.status != "ok" or chosen_call.model_id is None:
        raise invalid_param("chosen", f"the call to {vote.chosen!r} did not answer, so it cannot be the better answer")
    return PreferenceVote.objects.update_or_create(
        user=user,
        comparison_key=",".join(sorted(vote.request_ids)),
        defaults={
            "compared": vote.compared,
            "request_ids": vote.request_ids,
            "chosen": vote.chosen,
            "chosen_model": ModelEndpoint.objects.filter(pk=chosen_call.model_id).first(),
        },
    )


def vote_as_dict(vote: PreferenceVote) -> dict[str, Any]:
    return {
        "id": vote.id,
        "compared": vote.compared,
        "request_ids": vote.request_ids,
        "chosen": vote.chosen,
        "chosen_model": vote.chosen_model.name if vote.chosen_model else None,
    }
