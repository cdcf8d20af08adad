"""Turning the outcome of a request into its call row: tokens, exact cost, flags.

`call_outcome_record` is the one entry point, called exactly once per request when its outcome is
known. Usage from the provider wins; without it (a stream that ended without a usage chunk, a
client that disconnected, an upstream that broke off) the tokens are estimated and flagged.
"""

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

import orjson
from django.db import models, transaction

from routing.registry import ModelSnap

from .budgets import Reservation, budgets_call_ended, budgets_settle
from .call_insert import calls_insert
from .models import Call
from .pricing import cost_for_usage, prompt_tokens_estimate, tokens_estimate
from .recorder import call_recorder
from .rollups import rollups_add


@dataclass(slots=True)
class CallOutcome:
    request_id: str
    created_at: datetime
    source: str
    user_id: int | None
    api_key_id: int | None
    requested: str
    model: ModelSnap | None
    status: str
    http_status: int
    error_code: str = ""
    stream: bool = False
    messages: list[Any] = field(default_factory=list)
    usage: dict | None = None
    streamed_text: str | None = None  # for streams: what reached the client
    latency_ms: int = 0
    ttft_ms: int | None = None
    overhead_ms: float = 0.0
    attempts: list[dict] = field(default_factory=list)
    client_disconnected: bool = False
    reservations: list[Reservation] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Tokens:
    prompt: int
    cached: int
    completion: int
    estimated: bool


def call_tokens(outcome: CallOutcome) -> Tokens:
    """The provider's usage when it sent one; else an estimate from the request and the streamed text."""
    usage = outcome.usage
    if usage and isinstance(usage.get("prompt_tokens"), int):
        details = usage.get("prompt_tokens_details") or {}
        return Tokens(
            prompt=usage["prompt_tokens"],
            cached=int(details.get("cached_tokens") or 0),
            completion=int(usage.get("completion_tokens") or 0),
            estimated=False,
        )
    if outcome.model is None:
        return Tokens(0, 0, 0, False)
    return Tokens(
        prompt=prompt_tokens_estimate(outcome.messages),
        cached=0,
        completion=tokens_estimate(outcome.streamed_text or ""),
        estimated=True,
    )


def call_cost(model: ModelSnap | None, tokens: Tokens, at: datetime) -> Decimal | None:
    """The cost with the price in force at the call's time; None when the model has no price."""
    if model is None:
        return Decimal(0)
    price = model.price_at(at)
    if price is None:
        return None
    return cost_for_usage(
        price, prompt_tokens=tokens.prompt, cached_tokens=tokens.cached, completion_tokens=tokens.completion
    )


def call_row(outcome: CallOutcome) -> dict[str, Any]:
    """The call row of `outcome`: the dict the recorder spools (Call attnames as keys, plus `reservations`).

    Values stay Python objects (datetimes, Decimals, `Reservation`s): the recorder writes the row's
    JSON form to its spool, and the row writer process stores it from that line.
    """
    tokens = call_tokens(outcome)
    cost = call_cost(outcome.model, tokens, outcome.created_at)
    model = outcome.model
    return {
        "created_at": outcome.created_at,
        "request_id": outcome.request_id,
        "user_id": outcome.user_id,
        "api_key_id": outcome.api_key_id,
        "requested": outcome.requested,
        "model_id": model.id if model else None,
        "provider_id": model.provider.id if model else None,
        "status": outcome.status,
        "http_status": outcome.http_status,
        "error_code": outcome.error_code,
        "stream": outcome.stream,
        "prompt_tokens": tokens.prompt,
        "cached_tokens": tokens.cached,
        "completion_tokens": tokens.completion,
        "usage_estimated": tokens.estimated,
        "cost_usd": cost,
        "unpriced": cost is None,
        "latency_ms": outcome.latency_ms,
        "ttft_ms": outcome.ttft_ms,
        "overhead_ms": round(outcome.overhead_ms, 3),
        "attempt_count": sum(1 for a in outcome.attempts if a["outcome"] != "skipped"),
        "attempts": outcome.attempts,
        "client_disconnected": outcome.client_disconnected,
        "source": outcome.source,
        "reservations": outcome.reservations,
    }


def call_outcome_record(outcome: CallOutcome) -> None:
    row = call_row(outcome)
    budgets_call_ended(outcome.reservations, row["cost_usd"])
    call_recorder().record(row)


LINKS = [field for field in Call._meta.concrete_fields if field.is_relation]  # user, api_key, model, provider
STORE_CHUNK = 1000


def spooled_lines_store(lines: list[bytes], *, may_be_stored: bool = True) -> None:
    """Store rows given as the JSON lines of a spool (what the row writer process receives)."""
    call_rows_store([orjson.loads(line) for line in lines], may_be_stored=may_be_stored)


def call_rows_store(rows: list[dict[str, Any]], *, may_be_stored: bool = True) -> None:
    """Store recorded rows (fresh or replayed from a spool): idempotent by request_id.

    `may_be_stored=False` (rows recorded by this process and never tried before) skips the lookup
    of request ids that are stored already.

    In one transaction per chunk: insert the rows not stored yet and settle their budget
    reservations, so that a replayed row neither doubles nor settles twice. A row that names a
    user, key, model or provider deleted since the call keeps its numbers with that link cleared.
    """
    for start in range(0, len(rows), STORE_CHUNK):
        _store_chunk(rows[start : start + STORE_CHUNK], may_be_stored)


def _store_chunk(rows: list[dict[str, Any]], may_be_stored: bool) -> None:
    with transaction.atomic():
        stored = _stored_request_ids([row["request_id"] for row in rows]) if may_be_stored else set()
        fresh = list({row["request_id"]: row for row in rows if row["request_id"] not in stored}.values())
        fresh = _deleted_links_cleared(fresh)
        calls_insert(fresh)
        rollups_add(fresh)
        budgets_settle(_settlements(fresh))


def _deleted_links_cleared(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`rows`, with links to rows that no longer exist set to None: one query per link and batch, where
    foreign key constraints would check every row (Call's links have none)."""
    gone: dict[str, set[int]] = {}
    for link in LINKS:
        ids = {row.get(link.attname) for row in rows} - {None}
        missing = ids - _existing_ids(link, ids) if ids else set()
        if missing:
            gone[link.attname] = missing
    if not gone:
        return rows
    return [_links_cleared(row, gone) for row in rows]


def _links_cleared(row: dict[str, Any], gone: dict[str, set[int]]) -> dict[str, Any]:
    cleared = {name: None for name, ids in gone.items() if row.get(name) in ids}
    return {**row, **cleared} if cleared else row


def _existing_ids(link: models.ForeignKey, ids: set[int]) -> set[int]:
    return set(link.related_model._base_manager.filter(pk__in=ids).values_list("pk", flat=True))


def _settlements(rows: list[dict[str, Any]]) -> list[tuple[Reservation, Decimal | None]]:
    """(reservation, cost) of every budget reservation of `rows`, whose reservations are in their spooled
    list form (the cost may be a string, as spooled, or a Decimal)."""
    settlements = []
    for row in rows:
        if row.get("reservations"):
            cost = None if row["cost_usd"] is None else Decimal(row["cost_usd"])
            settlements += [(Reservation.from_list(reservation), cost) for reservation in row["reservations"]]
    return settlements


def _stored_request_ids(request_ids: list[str]) -> set[str]:
    return set(Call.objects.filter(request_id__in=request_ids).values_list("request_id", flat=True))
