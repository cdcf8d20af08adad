"""Turning the outcome of a request into its call row: tokens, exact cost, flags.

`call_outcome_record` is the one entry point, called exactly once per request when its outcome is
known. Usage from the provider wins; without it (a stream that ended without a usage chunk, a
client that disconnected, an upstream that broke off) the tokens are estimated and flagged.
"""

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import orjson
from django.db import InterfaceError, OperationalError, models, transaction

from routing.metering import CallOutcome
from routing.text import text_bounded
from routing.usage import TOKENS_MAX, Usage, prompt_tokens_estimate, tokens_for_chars

from .budgets import Reservation, budgets_call_ended, budgets_settle
from .call_body_build import call_body_build
from .call_insert import call_bodies_insert, calls_insert
from .models import Call, QuarantinedRow
from .price_provenance import price_provenance_columns
from .pricing import PriceSnap, cost_for_usage
from .recorder import call_recorder
from .rollups import rollups_add

logger = logging.getLogger("routerweb.calls")


@dataclass(frozen=True, slots=True)
class Tokens:
    prompt: int
    cached: int
    completion: int
    estimated: bool
    estimate_reason: str = ""  # why the tokens are estimated: what was wrong with the provider's usage
    cache_write: int = 0


def call_tokens(outcome: CallOutcome) -> Tokens:
    """The provider's usage when it sent a valid one; else an estimate from the request and the streamed
    text, with the reason (`no_usage`, `client_disconnected`, `invalid_usage:<field>`)."""
    usage = outcome.usage
    if isinstance(usage, Usage):
        return Tokens(
            prompt=usage.prompt,
            cached=usage.cached,
            completion=usage.completion,
            estimated=False,
            cache_write=usage.cache_write,
        )
    if outcome.model is None:
        return Tokens(0, 0, 0, False)
    reason = usage.reason if usage is not None else "no_usage"
    if outcome.client_disconnected and reason == "no_usage":
        reason = "client_disconnected"
    if outcome.kind == "embeddings":
        prompt = tokens_for_chars(outcome.input_chars) + outcome.input_token_ids
    else:
        prompt = prompt_tokens_estimate(outcome.messages)
    return Tokens(
        prompt=min(prompt, TOKENS_MAX),
        cached=0,
        completion=min(tokens_for_chars(outcome.completion_chars), TOKENS_MAX),
        estimated=True,
        estimate_reason=reason,
    )


def call_price(outcome: CallOutcome) -> PriceSnap | None:
    """The price the call is priced with, from the registry snapshot the call was routed with: the
    one in force at the call's time for the model that answered; for a cache hit, the one in force
    when the replayed call was made (it prices the saving)."""
    if outcome.model is None or outcome.snapshot_part is None:
        return None
    at = outcome.cache_hit_of.created_at if outcome.cache_hit_of is not None else outcome.created_at
    return outcome.snapshot_part.price_at(outcome.model, at)


def call_cost(outcome: CallOutcome, tokens: Tokens) -> Decimal | None:
    """The cost with the price in force at the call's time; 0 when no model answered, None when the
    model that did has no price (unpriced, never a made-up zero)."""
    return _cost_at(call_price(outcome), outcome, tokens)


def _cost_at(price: PriceSnap | None, outcome: CallOutcome, tokens: Tokens) -> Decimal | None:
    if outcome.model is None:
        return Decimal(0)
    if price is None:
        return None
    return cost_for_usage(
        price,
        prompt_tokens=tokens.prompt,
        cached_tokens=tokens.cached,
        completion_tokens=tokens.completion,
        cache_write_tokens=tokens.cache_write,
    )


def call_saved(outcome: CallOutcome, price: PriceSnap | None) -> Decimal | None:
    """What a cache hit saved: the replayed call's exact cost, its usage at `price` (`call_price`: in
    force when it was made); None for other calls and when that model had no price."""
    hit = outcome.cache_hit_of
    if hit is None or outcome.model is None or price is None:
        return None
    usage = hit.usage
    return cost_for_usage(
        price,
        prompt_tokens=usage.prompt,
        cached_tokens=usage.cached,
        completion_tokens=usage.completion,
        cache_write_tokens=usage.cache_write,
    )


REQUESTED_MAX = Call._meta.get_field("requested").max_length
ERROR_CODE_MAX = Call._meta.get_field("error_code").max_length


# A call row: `Call` attnames as keys (plus `reservations`), Python values; spooled as one JSON line.
CallRow = dict[str, Any]


def call_row(outcome: CallOutcome) -> CallRow:
    """The call row of `outcome`: the dict the recorder spools (Call attnames as keys, plus `reservations`).

    Values stay Python objects (datetimes, Decimals, `Reservation`s): the recorder writes the row's
    JSON form to its spool, and the row writer process stores it from that line.
    """
    tokens = call_tokens(outcome)
    price = call_price(outcome)
    cost = Decimal(0) if outcome.cache_hit_of is not None else _cost_at(price, outcome, tokens)
    row = _row_known(outcome)
    row.update(
        requested=text_bounded(outcome.requested, REQUESTED_MAX),
        error_code=text_bounded(outcome.error_code, ERROR_CODE_MAX),
        stream=outcome.stream,
        prompt_tokens=tokens.prompt,
        cached_tokens=tokens.cached,
        cache_write_tokens=tokens.cache_write,
        completion_tokens=tokens.completion,
        usage_estimated=tokens.estimated,
        estimate_reason=tokens.estimate_reason,
        cost_usd=cost,
        unpriced=cost is None,
        saved_usd=call_saved(outcome, price),
        ttft_ms=outcome.ttft_ms,
        overhead_ms=round(outcome.overhead_ms, 3),
        attempt_count=sum(1 for a in outcome.attempts if a["outcome"] != "skipped"),
        attempts=outcome.attempts,
        client_disconnected=outcome.client_disconnected,
    )
    row.update(price_provenance_columns(price))
    if _body_stored(outcome):
        row["body"] = call_body_build(outcome)
    return row


def _body_stored(outcome: CallOutcome) -> bool:
    """Whether the body storage rules of the snapshot the call was routed with keep its body."""
    policy = getattr(outcome.snapshot_part, "bodies", None)
    return policy is not None and policy.stores(
        user_id=outcome.user_id, key_id=outcome.api_key_id, requested=outcome.requested, status=outcome.status
    )


def _row_known(outcome: CallOutcome) -> CallRow:
    """The columns routerweb itself set (ids, status, timing), whatever came back from upstream."""
    model = outcome.model
    return {
        "created_at": outcome.created_at,
        "request_id": outcome.request_id,
        "user_id": outcome.user_id,
        "api_key_id": outcome.api_key_id,
        "model_id": model.id if model else None,
        "provider_id": model.provider.id if model else None,
        "kind": outcome.kind,
        "status": outcome.status,
        "http_status": outcome.http_status,
        "latency_ms": outcome.latency_ms,
        "source": outcome.source,
        "reservations": outcome.metering or [],
    }


def call_outcome_record(outcome: CallOutcome) -> None:
    """Record the call's row and release what its reservations did not spend; never raises (a row that
    cannot be built is recorded with what is certain about the call, and the error logged)."""
    try:
        row = call_row(outcome)
    except Exception:
        logger.exception("could not build the call row of %s; recording it without tokens", outcome.request_id)
        row = _call_row_fallback(outcome)
    if row["cost_usd"] is not None:
        outcome.cost_usd = float(row["cost_usd"])
    try:
        budgets_call_ended(outcome.metering or [], row["cost_usd"])
    finally:
        call_recorder().record(row)


def _call_row_fallback(outcome: CallOutcome) -> CallRow:
    """The row of a call whose row failed to build: what routerweb itself set, the tokens unknown."""
    answered = outcome.model is not None
    row = _row_known(outcome)
    row.update(usage_estimated=answered, estimate_reason="row_error", cost_usd=None, unpriced=answered)
    return row


LINKS = [field for field in Call._meta.concrete_fields if field.is_relation]  # user, api_key, model, provider
STORE_CHUNK = 1000


def spooled_lines_store(lines: list[bytes], *, may_be_stored: bool = True) -> int:
    """Store rows given as the JSON lines of a spool (what the row writer process receives).

    One bad row never blocks the others: a chunk that fails is split until the rows that fail are
    alone, and those are quarantined (`QuarantinedRow`) while the rest are stored. Only a failure of
    the database itself (a lost connection, a lock timeout) raises, for the caller to retry the batch.
    Returns how many rows were quarantined.
    """
    rows: list[tuple[bytes, dict[str, Any]]] = []
    unreadable = []
    for line in lines:
        row = _row_from_line(line)
        if row is None:
            unreadable.append((line, None))
        else:
            rows.append((line, row))
    if unreadable:
        rows_quarantine(unreadable, NOT_A_ROW)
    quarantined = len(unreadable)
    for start in range(0, len(rows), STORE_CHUNK):
        quarantined += _store_isolating(rows[start : start + STORE_CHUNK], may_be_stored)
    return quarantined


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


# The database itself failed (connection lost, locked, timed out): the same rows may store on a retry.
DATABASE_UNAVAILABLE = (OperationalError, InterfaceError)
NOT_A_ROW = "not a call row (invalid JSON, or no request_id)"


def _store_isolating(rows: list[tuple[bytes, dict[str, Any]]], may_be_stored: bool) -> int:
    """Store `rows` ((line, row) pairs), halving on a failure caused by the rows; returns how many were
    quarantined. A failed transaction stored nothing, so each half is tried as it was."""
    try:
        _store_chunk([row for _, row in rows], may_be_stored)
        return 0
    except DATABASE_UNAVAILABLE:
        raise
    except Exception as exc:
        if len(rows) == 1:
            logger.warning("quarantined call row %s: %s", rows[0][1].get("request_id"), exc)
            rows_quarantine(rows, f"{type(exc).__name__}: {exc}")
            return 1
    middle = len(rows) // 2
    return _store_isolating(rows[:middle], may_be_stored) + _store_isolating(rows[middle:], may_be_stored)


def _row_from_line(line: bytes) -> dict[str, Any] | None:
    try:
        row = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(row, dict) or not isinstance(row.get("request_id"), str):
        return None
    return row


QUARANTINE_ERROR_MAX = 2000
QUARANTINE_REQUEST_ID_MAX = QuarantinedRow._meta.get_field("request_id").max_length


def rows_quarantine(rows: list[tuple[bytes, dict[str, Any] | None]], error: str) -> None:
    """Keep rows that cannot be stored, with the error: one entry per request id (a row quarantined
    again, from a replayed spool or a retry, updates its entry)."""
    error = text_bounded(error, QUARANTINE_ERROR_MAX)
    with transaction.atomic():
        for line, row in rows:
            request_id = text_bounded((row or {}).get("request_id"), QUARANTINE_REQUEST_ID_MAX)
            text = text_bounded(line.decode("utf-8", "replace"), len(line))
            updated = request_id and QuarantinedRow.objects.filter(request_id=request_id).update(
                error=error, line=text, tries=models.F("tries") + 1
            )
            if not updated:
                QuarantinedRow.objects.create(request_id=request_id, line=text, error=error)


def quarantined_rows_retry(entries: Iterable[QuarantinedRow]) -> int:
    """Try to store quarantined rows again: each one stored leaves the quarantine (in the same
    transaction), the others keep their entry with the new error. Returns how many were stored."""
    stored = 0
    for entry in entries:
        line = entry.line.encode()
        row = _row_from_line(line)
        try:
            if row is None:
                raise ValueError(NOT_A_ROW)
            with transaction.atomic():
                _store_chunk([row], may_be_stored=True)
                entry.delete()
            stored += 1
        except DATABASE_UNAVAILABLE:
            raise
        except Exception as exc:
            rows_quarantine([(line, row)], f"{type(exc).__name__}: {exc}")
    return stored


def _store_chunk(rows: list[dict[str, Any]], may_be_stored: bool) -> None:
    with transaction.atomic():
        stored = _stored_request_ids([row["request_id"] for row in rows]) if may_be_stored else set()
        fresh = list({row["request_id"]: row for row in rows if row["request_id"] not in stored}.values())
        fresh = _deleted_links_cleared(fresh)
        calls_insert(fresh)
        call_bodies_insert(fresh)
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
