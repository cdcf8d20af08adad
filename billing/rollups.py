"""Call rollups: counters per hour and per day, kept in step with the call rows.

Two ways in, which must always give the same rows (tests/test_dashboard_rollups.py checks it):

- `rollups_add(rows)`: called in the transaction that inserts the call rows (billing/calls.py). The
  rows of a batch are aggregated in Python, then each (period, bucket, dimensions) is upserted with
  `INSERT … ON CONFLICT … DO UPDATE SET n = n + EXCLUDED.n`, as Zulip's analytics counts do: no read,
  no lost update between workers, and a replayed row never comes here twice because only rows that
  were actually inserted are passed in.
- `rollups_rebuild(since=...)`: deletes the rollups from `since` on and computes them again from the
  raw rows, in SQL (`INSERT … SELECT … GROUP BY`): the hours from `billing_call`, the days from the hours.

The definitions shared by both: the bucket is the UTC hour (day) of `created_at`; a call is a
fallback when its `attempts` has at least one entry before the `ok` one; its cost counts only when
priced, in picodollars (an unpriced call's tokens count in the `unpriced_*` counters too); latency
and TTFT go to the first bucket whose bound is >= the value.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping
from datetime import UTC, date, datetime, time
from decimal import Decimal
from typing import Any

from django.db import connection, transaction
from django.db.models import (
    BigIntegerField,
    BooleanField,
    Count,
    F,
    Func,
    IntegerField,
    Q,
    QuerySet,
    Sum,
    Value,
)
from django.db.models.functions import Cast, Coalesce, Round, TruncDay, TruncHour

from .models import HISTOGRAM_BOUNDS_MS, LATENCY_COLUMNS, TTFT_COLUMNS, Call, CallRollup

PICO = 10**12  # picodollars per dollar: the unit of the rollups' money counters
DIMENSIONS = ("period", "bucket_start", "user_id", "api_key_id", "model_id", "requested", "status", "kind")
SCALAR_COUNTERS = (
    "calls",
    "fallback_calls",
    "unpriced_calls",
    "estimated_calls",
    "prompt_tokens",
    "cached_tokens",
    "cache_write_tokens",
    "completion_tokens",
    "cost_pusd",
    "saved_pusd",
    "unpriced_prompt_tokens",
    "unpriced_cached_tokens",
    "unpriced_cache_write_tokens",
    "unpriced_completion_tokens",
)
COUNTERS = (*SCALAR_COUNTERS, *LATENCY_COLUMNS, *TTFT_COLUMNS)
_AT = {name: index for index, name in enumerate(COUNTERS)}

Key = tuple[str, datetime, int, int, int, str, str, str]


# ---------------------------------------------------------------------------- shared definitions


def answered_by_fallback(attempts: Any) -> bool:
    """Whether the call was answered by a candidate other than the first: an entry precedes the `ok` one."""
    if not isinstance(attempts, list):
        return False
    for index, attempt in enumerate(attempts):
        if isinstance(attempt, Mapping) and attempt.get("outcome") == "ok":
            return index > 0
    return False


def histogram_bucket(value_ms: int) -> int:
    """Index of the bucket that counts `value_ms`: the first bound >= it, or the last (unbounded) one."""
    return bisect.bisect_left(HISTOGRAM_BOUNDS_MS, value_ms)


def cost_pusd(cost_usd: Decimal | str | float | None) -> int:
    """A call's cost in picodollars (rounded as the 12-decimal column stores it); 0 when unpriced."""
    if cost_usd is None:
        return 0
    if not isinstance(cost_usd, Decimal):
        cost_usd = Decimal(str(cost_usd))
    return int(cost_usd.scaleb(12).to_integral_value())


def hour_start(created_at: datetime | str) -> datetime:
    """The start of the UTC hour of a call's `created_at` (a datetime, or an ISO string from the spool)."""
    if isinstance(created_at, str):
        created_at = datetime.fromisoformat(created_at)
    if created_at.tzinfo is None:
        created_at = created_at.replace(tzinfo=UTC)
    return created_at.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


# ---------------------------------------------------------------------------- maintained as calls are stored


def rollups_add(rows: Iterable[Mapping[str, Any]]) -> None:
    """Add freshly inserted call rows (dicts with Call's field names, `*_id` for keys) to the rollups.

    Call it inside the transaction that inserted them, so that the rows and their counts commit together.
    The row writer calls it for every row the gateway records, so the loop is kept lean: rows add up per
    hour first, and the days are summed from those hours.
    """
    hours: dict[Key, list[int]] = {}
    for row in rows:
        key = (
            "hour",
            hour_start(row["created_at"]),
            int(row.get("user_id") or 0),
            int(row.get("api_key_id") or 0),
            int(row.get("model_id") or 0),
            row["requested"],
            row["status"],
            row.get("kind") or "chat",
        )
        total = hours.get(key)
        if total is None:
            total = hours[key] = [0] * len(COUNTERS)
        _count_row(total, row)
    if not hours:
        return
    totals = dict(hours)
    for (_, hour, *dims), counters in hours.items():
        day = totals.setdefault(("day", hour.replace(hour=0), *dims), [0] * len(COUNTERS))
        for index, value in enumerate(counters):
            day[index] += value
    _upsert(totals)


(_CALLS, _FALLBACK, _UNPRICED, _ESTIMATED, _PROMPT, _CACHED, _CACHE_WRITE, _COMPLETION, _COST, _SAVED,
 _UNPRICED_PROMPT, _UNPRICED_CACHED, _UNPRICED_CACHE_WRITE, _UNPRICED_COMPLETION,
 ) = range(len(SCALAR_COUNTERS))  # fmt: skip
_LATENCY_AT = [_AT[column] for column in LATENCY_COLUMNS]
_TTFT_AT = [_AT[column] for column in TTFT_COLUMNS]


def _count_row(total: list[int], row: Mapping[str, Any]) -> None:
    """Add one call row to the counters of its bucket."""
    total[_CALLS] += 1
    if answered_by_fallback(row.get("attempts")):
        total[_FALLBACK] += 1
    prompt = int(row.get("prompt_tokens") or 0)
    cached = int(row.get("cached_tokens") or 0)
    cache_write = int(row.get("cache_write_tokens") or 0)
    completion = int(row.get("completion_tokens") or 0)
    cost = row["cost_usd"]
    if cost is None:
        total[_UNPRICED] += 1
        total[_UNPRICED_PROMPT] += prompt
        total[_UNPRICED_CACHED] += cached
        total[_UNPRICED_CACHE_WRITE] += cache_write
        total[_UNPRICED_COMPLETION] += completion
    else:
        total[_COST] += cost_pusd(cost)
    total[_SAVED] += cost_pusd(row.get("saved_usd"))
    if row.get("usage_estimated"):
        total[_ESTIMATED] += 1
    total[_PROMPT] += prompt
    total[_CACHED] += cached
    total[_CACHE_WRITE] += cache_write
    total[_COMPLETION] += completion
    total[_LATENCY_AT[histogram_bucket(int(row.get("latency_ms") or 0))]] += 1
    ttft = row.get("ttft_ms")
    if ttft is not None:
        total[_TTFT_AT[histogram_bucket(int(ttft))]] += 1


def _upsert(totals: dict[Key, list[int]]) -> None:
    adapt = connection.ops.adapt_datetimefield_value
    params = [
        (period, adapt(bucket), user_id, key_id, model_id, requested, status, kind, *counters)
        for (period, bucket, user_id, key_id, model_id, requested, status, kind), counters in sorted(
            totals.items(),
            key=lambda item: item[0],  # a fixed order: concurrent batches never deadlock
        )
    ]
    with connection.cursor() as cursor:
        cursor.executemany(_upsert_sql(), params)


def _upsert_sql() -> str:
    quote = connection.ops.quote_name
    table = quote(CallRollup._meta.db_table)
    columns = DIMENSIONS + COUNTERS
    additions = ", ".join(f"{quote(c)} = {table}.{quote(c)} + EXCLUDED.{quote(c)}" for c in COUNTERS)
    return (
        f"INSERT INTO {table} ({', '.join(quote(c) for c in columns)}) "
        f"VALUES ({', '.join(['%s'] * len(columns))}) "
        f"ON CONFLICT ({', '.join(quote(c) for c in DIMENSIONS)}) DO UPDATE SET {additions}"
    )


# ---------------------------------------------------------------------------- rebuilt from the raw rows


class AnsweredByFallback(Func):
    """SQL for `answered_by_fallback(attempts)`: an `ok` entry exists and the first entry is not it."""

    output_field = BooleanField()
    arity = 1
    templates = {
        "postgresql": (
            "(jsonb_path_exists({0}, '$[*] ? (@.outcome == \"ok\")') "
            "AND ({0} -> 0 ->> 'outcome') IS DISTINCT FROM 'ok')"
        ),
        "sqlite": (
            "(EXISTS (SELECT 1 FROM json_each({0}) AS a WHERE json_extract(a.value, '$.outcome') = 'ok') "
            "AND coalesce(json_extract({0}, '$[0].outcome'), '') <> 'ok')"
        ),
    }

    # Aggregate filters compile their condition with as_sql() directly, so the vendor is chosen here.
    def as_sql(self, compiler, connection, **extra_context):
        template = self.templates.get(connection.vendor)
        if template is None:
            raise NotImplementedError(f"rollups are not implemented for {connection.vendor}")
        sql, params = compiler.compile(self.source_expressions[0])
        return template.format(sql), tuple(params) * template.count("{0}")


def rollups_rebuild(*, since: date | None = None) -> int:
    """Recompute the rollups of the UTC days from `since` (all when None) from the call rows; returns calls counted.

    Runs in one transaction. On PostgreSQL the rollup table is locked first (writers of new call rows
    wait for the rebuild and then add their counts), so that a call is counted exactly once however
    the rebuild and the recording interleave; SQLite serialises writers anyway.
    """
    start = datetime.combine(since, time.min, tzinfo=UTC) if since else None
    with transaction.atomic():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute(f"LOCK TABLE {connection.ops.quote_name(CallRollup._meta.db_table)} IN EXCLUSIVE MODE")
                # One big aggregation: JIT compiles for seconds and gains nothing here, and sorting
                # millions of rows in the default 4 MB spills to disk.
                cursor.execute("SET LOCAL jit = off")
                cursor.execute("SET LOCAL work_mem = '256MB'")
        old = CallRollup.objects.all()
        if start:
            old = old.filter(bucket_start__gte=start)
        old.delete()
        calls = Call.objects.all()
        if start:
            calls = calls.filter(created_at__gte=start)
        _insert_select("hour", _hours_from_calls(calls))
        hours = CallRollup.objects.filter(period=CallRollup.Period.HOUR)
        if start:
            hours = hours.filter(bucket_start__gte=start)
        _insert_select("day", _days_from_hours(hours))
        return calls.count()


def _hours_from_calls(calls: QuerySet[Call]) -> QuerySet:
    """One row per (hour, dimensions): the counters of `COUNTERS`, named `r_<counter>`."""
    bounds = (0, *HISTOGRAM_BOUNDS_MS)
    histograms = {}
    for field, columns in (("latency_ms", LATENCY_COLUMNS), ("ttft_ms", TTFT_COLUMNS)):
        for index, column in enumerate(columns):
            if index == 0:
                condition = Q(**{f"{field}__lte": bounds[1]})
            elif index < len(HISTOGRAM_BOUNDS_MS):
                condition = Q(**{f"{field}__gt": bounds[index], f"{field}__lte": bounds[index + 1]})
            else:
                condition = Q(**{f"{field}__gt": HISTOGRAM_BOUNDS_MS[-1]})
            histograms[f"r_{column}"] = Count("id", filter=condition)
    cost = Cast(Round(F("cost_usd") * Value(PICO)), BigIntegerField())
    saved = Cast(Round(F("saved_usd") * Value(PICO)), BigIntegerField())
    return (
        calls.order_by()
        .annotate(
            r_bucket_start=TruncHour("created_at", tzinfo=UTC),
            r_user_id=Coalesce("user_id", 0, output_field=BigIntegerField()),
            r_api_key_id=Coalesce("api_key_id", 0, output_field=BigIntegerField()),
            r_model_id=Coalesce("model_id", 0, output_field=BigIntegerField()),
            r_requested=F("requested"),
            r_status=F("status"),
            r_kind=F("kind"),
        )
        .values("r_bucket_start", "r_user_id", "r_api_key_id", "r_model_id", "r_requested", "r_status", "r_kind")
        .annotate(
            r_calls=Count("id"),
            r_fallback_calls=Count("id", filter=AnsweredByFallback("attempts")),
            r_unpriced_calls=Count("id", filter=Q(cost_usd__isnull=True)),
            r_estimated_calls=Count("id", filter=Q(usage_estimated=True)),
            r_prompt_tokens=Sum("prompt_tokens", output_field=BigIntegerField()),
            r_cached_tokens=Sum("cached_tokens", output_field=BigIntegerField()),
            r_cache_write_tokens=Sum("cache_write_tokens", output_field=BigIntegerField()),
            r_completion_tokens=Sum("completion_tokens", output_field=BigIntegerField()),
            r_cost_pusd=Coalesce(Sum(cost), 0, output_field=BigIntegerField()),
            r_saved_pusd=Coalesce(Sum(saved), 0, output_field=BigIntegerField()),
            **{
                f"r_unpriced_{name}": Coalesce(
                    Sum(name, filter=Q(cost_usd__isnull=True)), 0, output_field=BigIntegerField()
                )
                for name in ("prompt_tokens", "cached_tokens", "cache_write_tokens", "completion_tokens")
            },
            **histograms,
        )
    )


def _days_from_hours(hours: QuerySet[CallRollup]) -> QuerySet:
    return (
        hours.order_by()
        .annotate(
            r_bucket_start=TruncDay("bucket_start", tzinfo=UTC),
            r_user_id=F("user_id"),
            r_api_key_id=F("api_key_id"),
            r_model_id=F("model_id"),
            r_requested=F("requested"),
            r_status=F("status"),
            r_kind=F("kind"),
        )
        .values("r_bucket_start", "r_user_id", "r_api_key_id", "r_model_id", "r_requested", "r_status", "r_kind")
        .annotate(**{f"r_{c}": Sum(c, output_field=IntegerField()) for c in COUNTERS})
    )


def _insert_select(period: str, rows: QuerySet) -> None:
    """INSERT INTO the rollup table the rows of `rows` (aliases `r_<column>`), in the database."""
    quote = connection.ops.quote_name
    select_sql, params = rows.query.sql_with_params()
    columns = DIMENSIONS + COUNTERS
    targets = ", ".join(quote(c) for c in columns)
    values = ", ".join("r." + quote(f"r_{c}") for c in columns[1:])
    insert = f"INSERT INTO {quote(CallRollup._meta.db_table)} ({targets}) SELECT %s, {values} FROM"
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            # PostgreSQL never runs INSERT … SELECT in parallel, but CREATE TABLE … AS SELECT it does.
            cursor.execute(f"CREATE TEMPORARY TABLE rollup_stage ON COMMIT DROP AS {select_sql}", params)
            cursor.execute(f"{insert} rollup_stage AS r", (period,))
            cursor.execute("DROP TABLE rollup_stage")
        else:
            cursor.execute(f"{insert} ({select_sql}) AS r", (period, *params))
