"""Aggregates of the calls the filters select, read from the rollups: totals (chat and embeddings apart),
spend over time and the per-requested-name, per-user and per-key breakdowns (the per-model one, with its
latency percentiles, is `model_stats.py`).

Every read is one rollup scan whose size depends on the range and the number of (user, key, model,
status) combinations, never on the number of calls. `call_slices` is the scan the totals, the
requested-name breakdown and the user breakdown share: read it once, pass it to each.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from django.db.models import Sum

from routing.models import ModelEndpoint

from ..models import Call, CallRollup
from ..rollups import COUNTERS, PICO
from .access import CallFilters, rollups_matching

TOP_USERS = 10


def usd_from_pusd(pusd: int | Decimal | None) -> Decimal:
    """Picodollars (as summed by the database) to exact dollars with 12 decimal places."""
    return (Decimal(int(pusd or 0)) / PICO).quantize(Decimal("1e-12"))


def rate(part: int, whole: int) -> float:
    """`part` as a fraction of `whole`, to 6 places; 0.0 of nothing."""
    return round(part / whole, 6) if whole else 0.0


class _CallRates:
    """Rates of a record with `calls`, `error_calls` and `fallback_calls`."""

    __slots__ = ()
    calls: int
    error_calls: int
    fallback_calls: int

    @property
    def error_rate(self) -> float:
        return rate(self.error_calls, self.calls)

    @property
    def fallback_rate(self) -> float:
        """Share of requests answered by a candidate other than the first."""
        return rate(self.fallback_calls, self.calls)


@dataclass(frozen=True, slots=True)
class Totals(_CallRates):
    calls: int = 0
    error_calls: int = 0
    rejected_calls: int = 0
    cache_hit_calls: int = 0
    fallback_calls: int = 0
    unpriced_calls: int = 0
    estimated_calls: int = 0
    prompt_tokens: int = 0
    cached_tokens: int = 0
    cache_write_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: Decimal = Decimal(0)
    saved_usd: Decimal = Decimal(0)  # what cache hits saved
    by_kind: tuple[KindTotals, ...] = ()  # chat and embeddings apart, always both, in that order

    def of_kind(self, kind: str) -> KindTotals:
        return next((k for k in self.by_kind if k.kind == kind), KindTotals(kind))

    @property
    def cache_hit_rate(self) -> float:
        """Share of requests answered from the response cache."""
        return rate(self.cache_hit_calls, self.calls)

    @property
    def cache_hit_pct(self) -> float:
        return self.cache_hit_rate * 100

    @property
    def error_pct(self) -> float:
        return self.error_rate * 100

    @property
    def fallback_pct(self) -> float:
        return self.fallback_rate * 100


@dataclass(frozen=True, slots=True)
class KindTotals:
    """The calls of one kind (chat or embeddings) within the totals."""

    kind: str
    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: Decimal = Decimal(0)


KINDS = tuple(ModelEndpoint.Kind.values)
_SLICE_COUNTERS = COUNTERS[: COUNTERS.index("cost_pusd")]  # the plain counts, before cost and histograms
_SLICE_SUMS = {f"n_{name}": Sum(name) for name in (*_SLICE_COUNTERS, "cost_pusd", "saved_pusd")}
_MONEY_SUMS = frozenset({"n_cost_pusd", "n_saved_pusd"})


@dataclass(frozen=True, slots=True)
class Slice:
    """The counters of the calls of one user's API key (0: none) for one requested name with one status,
    in the range."""

    user_id: int
    api_key_id: int
    requested: str
    status: str
    kind: str
    calls: int
    fallback_calls: int
    unpriced_calls: int
    estimated_calls: int
    prompt_tokens: int
    cached_tokens: int
    cache_write_tokens: int
    completion_tokens: int
    cost_usd: Decimal
    saved_usd: Decimal = Decimal(0)


def call_slices(*, filters: CallFilters) -> list[Slice]:
    """One rollup scan that the totals, the requested-name breakdown and the user breakdown share.

    There are at most keys × requested names × statuses slices, a few hundred, whatever the calls.
    """
    rows = (
        rollups_matching(filters=filters, period=filters.totals_period)
        .values("user_id", "api_key_id", "requested", "status", "kind")
        .annotate(**_SLICE_SUMS)
    )
    return [
        Slice(
            user_id=row["user_id"],
            api_key_id=row["api_key_id"],
            requested=row["requested"],
            status=row["status"],
            kind=row["kind"],
            cost_usd=usd_from_pusd(row["n_cost_pusd"]),
            saved_usd=usd_from_pusd(row["n_saved_pusd"]),
            **{name[2:]: int(row[name]) for name in row if name.startswith("n_") and name not in _MONEY_SUMS},
        )
        for row in rows
    ]


def call_totals(*, slices: Iterable[Slice]) -> Totals:
    """The totals of `slices` (read by `call_slices`)."""
    sums: dict[str, Any] = defaultdict(int)
    cost = saved = Decimal(0)
    kinds = {kind: [0, 0, 0, Decimal(0)] for kind in KINDS}
    for piece in slices:
        for name in _SLICE_COUNTERS:
            sums[name] += getattr(piece, name)
        sums[f"{piece.status}_calls"] += piece.calls
        cost += piece.cost_usd
        saved += piece.saved_usd
        counts = (piece.calls, piece.prompt_tokens, piece.completion_tokens, piece.cost_usd)
        kinds[piece.kind] = [a + b for a, b in zip(kinds.get(piece.kind, [0, 0, 0, Decimal(0)]), counts, strict=True)]
    return Totals(
        cost_usd=cost,
        saved_usd=saved,
        by_kind=tuple(KindTotals(kind, *counts) for kind, counts in kinds.items()),
        error_calls=sums[f"{Call.Status.ERROR}_calls"],
        rejected_calls=sums[f"{Call.Status.REJECTED}_calls"],
        cache_hit_calls=sums[f"{Call.Status.CACHE_HIT}_calls"],
        **{name: sums[name] for name in _SLICE_COUNTERS},
    )


@dataclass(frozen=True, slots=True)
class SpendSeries:
    """Spend per time bucket (`starts`) for each model that answered calls in the range, biggest first,
    and per bucket the calls (answered or not) and their tokens in and out."""

    bucket: str
    starts: list[datetime]
    by_model: dict[int, list[Decimal]]
    calls: list[int]
    prompt_tokens: list[int]
    completion_tokens: list[int]


def bucket_starts(*, filters: CallFilters) -> list[datetime]:
    """The start of every chart bucket of the range, oldest first: UTC hours, or midnights in the
    filters' zone (a day across a daylight-saving change has 23 or 25 hours)."""
    if filters.bucket == CallRollup.Period.HOUR:
        first = filters.start.astimezone(UTC)  # a whole hour: see CallFilters
        return [first + timedelta(hours=n) for n in range(int((filters.end - first) / timedelta(hours=1)))]
    zone = filters.zone
    day, last = filters.start.astimezone(zone).date(), filters.end.astimezone(zone).date()
    starts = []
    while day < last:
        starts.append(datetime.combine(day, time.min, tzinfo=zone))
        day += timedelta(days=1)
    return starts


def spend_series(*, filters: CallFilters) -> SpendSeries:
    starts = bucket_starts(filters=filters)
    hours = {start: i for i, start in enumerate(starts)}
    days = {start.date(): i for i, start in enumerate(starts)}
    zone, hourly = filters.zone, filters.bucket == CallRollup.Period.HOUR

    def index(bucket_start: datetime) -> int:
        # A row of an hour or a day goes to the bucket (hour, or day of the zone) it starts in.
        return hours[bucket_start] if hourly else days[bucket_start.astimezone(zone).date()]

    rows = (
        rollups_matching(filters=filters, period=filters.bucket_period)
        .values("bucket_start", "model_id")
        .annotate(
            cost_pusd=Sum("cost_pusd"),
            n_calls=Sum("calls"),
            n_prompt=Sum("prompt_tokens"),
            n_completion=Sum("completion_tokens"),
        )
    )
    by_model: dict[int, list[Decimal]] = {}
    calls, prompt, completion = [0] * len(starts), [0] * len(starts), [0] * len(starts)
    for row in rows:
        i = index(row["bucket_start"].astimezone(UTC))
        calls[i] += int(row["n_calls"])
        prompt[i] += int(row["n_prompt"])
        completion[i] += int(row["n_completion"])
        if row["model_id"]:  # model 0: calls no model answered, in the traffic but not in the spend
            by_model.setdefault(row["model_id"], [Decimal(0)] * len(starts))[i] += usd_from_pusd(row["cost_pusd"])
    ordered = sorted(by_model.items(), key=lambda item: (-sum(item[1]), item[0]))
    return SpendSeries(
        bucket=filters.bucket,
        starts=starts,
        by_model=dict(ordered),
        calls=calls,
        prompt_tokens=prompt,
        completion_tokens=completion,
    )


@dataclass(frozen=True, slots=True)
class RequestedStats(_CallRates):
    """Error and fallback counts per name the clients asked for (a model or a route)."""

    requested: str
    calls: int
    error_calls: int
    fallback_calls: int


def requested_stats(*, slices: Iterable[Slice]) -> list[RequestedStats]:
    """Per requested name in `slices`, most called first."""
    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    for piece in slices:
        entry = counts[piece.requested]
        entry[0] += piece.calls
        entry[1] += piece.calls if piece.status == Call.Status.ERROR else 0
        entry[2] += piece.fallback_calls
    stats = [RequestedStats(name, calls, errors, fallbacks) for name, (calls, errors, fallbacks) in counts.items()]
    return sorted(stats, key=lambda s: (-s.calls, s.requested))


@dataclass(frozen=True, slots=True)
class UserSpend:
    """Spend of one user (`user_id` 0: calls without a user), or of the users beyond the top (`others` > 0)."""

    user_id: int
    calls: int
    cost_usd: Decimal
    others: int = 0


def user_spend(*, slices: Iterable[Slice], top: int = TOP_USERS) -> list[UserSpend]:
    """The `top` users in `slices` by spend, then one entry summing every other user (when there are more)."""
    ranked = _top_spenders(slices=slices, group=lambda piece: piece.user_id, top=top)
    return [UserSpend(user_id=i, calls=n, cost_usd=cost, others=others) for i, n, cost, others in ranked]


def _top_spenders(
    *, slices: Iterable[Slice], group: Callable[[Slice], int], top: int
) -> list[tuple[int, int, Decimal, int]]:
    """(id, calls, cost, others) of the `top` groups of `slices` by spend (most calls, then the lowest id
    first on a tie), then (0, calls, cost, number of groups) of all the others when there are more."""
    calls: dict[int, int] = defaultdict(int)
    costs: dict[int, Decimal] = defaultdict(Decimal)
    for piece in slices:
        calls[group(piece)] += piece.calls
        costs[group(piece)] += piece.cost_usd
    ranked = sorted(((i, n, costs[i], 0) for i, n in calls.items()), key=lambda r: (-r[2], -r[1], r[0]))
    if len(ranked) <= top:
        return ranked
    rest = ranked[top:]
    return [*ranked[:top], (0, sum(r[1] for r in rest), sum((r[2] for r in rest), Decimal(0)), len(rest))]


@dataclass(frozen=True, slots=True)
class KeySpend:
    """Spend of one API key (`api_key_id` 0: calls without a key, the playground's), or of the keys
    beyond the top (`others` > 0)."""

    api_key_id: int
    calls: int
    cost_usd: Decimal
    others: int = 0


def key_spend(*, slices: Iterable[Slice], top: int = TOP_USERS) -> list[KeySpend]:
    """The `top` API keys in `slices` by spend, then one entry summing every other key (when there are more)."""
    ranked = _top_spenders(slices=slices, group=lambda piece: piece.api_key_id, top=top)
    return [KeySpend(api_key_id=i, calls=n, cost_usd=cost, others=others) for i, n, cost, others in ranked]
