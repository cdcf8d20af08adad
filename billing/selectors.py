"""Reads for the spend dashboard: who may see what, totals and series from the rollups, raw rows for the rest.

Totals and charts read only `CallRollup` rows (day rows for whole-day ranges, hour rows otherwise),
so their cost depends on the range and the number of (key, model, status) combinations, not on the
number of calls. Raw `Call` rows are read only for the recent-calls table (keyset-paginated on the
`(created_at, id)` index) and the CSV export (streamed with a server-side cursor).

Money stays `Decimal`: rollups sum integer picodollars, converted once here.
"""

from __future__ import annotations

import base64
import binascii
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import PermissionDenied
from django.db.models import Case, Count, DecimalField, F, Q, QuerySet, Sum, Value, When
from django.utils import timezone

from routing.models import ApiKey, ModelEndpoint, PreferenceVote, Route

from .budgets import period_start_for
from .models import HISTOGRAM_BOUNDS_MS, LATENCY_COLUMNS, TTFT_COLUMNS, Budget, Call, CallRollup
from .rollups import COUNTERS, PICO

HOURLY_UP_TO = timedelta(days=2)  # ranges up to this long are charted per hour, longer ones per day
TOP_USERS = 10
BUDGETS_SHOWN = 7


# ---------------------------------------------------------------------------- filters and access


@dataclass(frozen=True, slots=True)
class CallFilters:
    """Calls with `start <= created_at < end` (UTC), narrowed by any of the ids / the requested name."""

    start: datetime
    end: datetime
    user_id: int | None = None
    api_key_id: int | None = None
    model_id: int | None = None
    requested: str | None = None

    def __post_init__(self) -> None:
        # Rollups cannot split an hour: a range must start and end on whole UTC hours.
        for bound in (self.start, self.end):
            if bound.tzinfo is None or bound.astimezone(UTC).replace(minute=0, second=0, microsecond=0) != bound:
                raise ValueError(f"range bounds must be aware datetimes on whole hours, not {bound!r}")
        if self.end <= self.start:
            raise ValueError("the range must end after it starts")

    @property
    def bucket(self) -> str:
        """The charts' time step: "day" for whole-day ranges over two days, else "hour" (day rows
        cannot split a day)."""
        if self.whole_days and self.end - self.start > HOURLY_UP_TO:
            return CallRollup.Period.DAY
        return CallRollup.Period.HOUR

    @property
    def whole_days(self) -> bool:
        return self.start.astimezone(UTC).time() == time.min and self.end.astimezone(UTC).time() == time.min


class ForbiddenFilter(PermissionDenied):
    """A filter asks for calls the viewer may not see; `param` names it."""

    def __init__(self, param: str, message: str):
        super().__init__(message)
        self.param = param


SPEND_PERMISSION = "billing.view_all_spend"


def viewer_sees_everyone(viewer: AbstractBaseUser) -> bool:
    """Whether `viewer` may read every user's spend, calls and CSV: the permission (from a group an admin
    manages, or superuser), never the staff flag alone."""
    return viewer.has_perm(SPEND_PERMISSION)


def call_filters_for(
    *,
    viewer: AbstractBaseUser,
    start: datetime,
    end: datetime,
    user: AbstractBaseUser | None = None,
    api_key: ApiKey | None = None,
    model: ModelEndpoint | None = None,
    route: Route | None = None,
) -> CallFilters:
    """The filters `viewer` may read. With the spend permission everyone's calls; without it only their
    own, and asking for another user's calls or key raises ForbiddenFilter (a PermissionDenied) rather
    than quietly narrowing."""
    user_id = user.pk if user else None
    if not viewer_sees_everyone(viewer):
        if user is not None and user.pk != viewer.pk:
            raise ForbiddenFilter("user", "You can only see your own calls.")
        if api_key is not None and api_key.user_id != viewer.pk:
            raise ForbiddenFilter("key", "You can only see the calls of your own API keys.")
        user_id = viewer.pk
    return CallFilters(
        start=start,
        end=end,
        user_id=user_id,
        api_key_id=api_key.pk if api_key else None,
        model_id=model.pk if model else None,
        requested=route.name if route else None,
    )


def _rollups(filters: CallFilters, period: str) -> QuerySet[CallRollup]:
    rows = CallRollup.objects.filter(period=period, bucket_start__gte=filters.start, bucket_start__lt=filters.end)
    return _narrowed(rows, filters).order_by()


def _narrowed(rows: QuerySet, filters: CallFilters) -> QuerySet:
    """Rows (calls or rollups: the same field names) of the filters' user, key, model and route."""
    dimensions = {
        "user_id": filters.user_id,
        "api_key_id": filters.api_key_id,
        "model_id": filters.model_id,
        "requested": filters.requested,
    }
    return rows.filter(**{name: value for name, value in dimensions.items() if value is not None})


def _totals_period(filters: CallFilters) -> str:
    """Whole-day ranges are summed from day rows (24 times fewer), others from hour rows."""
    return CallRollup.Period.DAY if filters.whole_days else CallRollup.Period.HOUR


def _calls(filters: CallFilters) -> QuerySet[Call]:
    return _narrowed(Call.objects.filter(created_at__gte=filters.start, created_at__lt=filters.end), filters)


def usd(pusd: int | Decimal | None) -> Decimal:
    """Picodollars (as summed by the database) to exact dollars with 12 decimal places."""
    return (Decimal(int(pusd or 0)) / PICO).quantize(Decimal("1e-12"))


def _ratio(part: int, whole: int) -> float:
    return round(part / whole, 6) if whole else 0.0


# ---------------------------------------------------------------------------- totals


class _CallRates:
    """Rates of a record with `calls`, `error_calls` and `fallback_calls`."""

    __slots__ = ()
    calls: int
    error_calls: int
    fallback_calls: int

    @property
    def error_rate(self) -> float:
        return _ratio(self.error_calls, self.calls)

    @property
    def fallback_rate(self) -> float:
        """Share of requests answered by a candidate other than the first."""
        return _ratio(self.fallback_calls, self.calls)


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
    completion_tokens: int = 0
    cost_usd: Decimal = Decimal(0)

    @property
    def error_pct(self) -> float:
        return self.error_rate * 100

    @property
    def fallback_pct(self) -> float:
        return self.fallback_rate * 100


def call_totals(*, filters: CallFilters) -> Totals:
    return totals_of(call_slices(filters=filters))


_SLICE_COUNTERS = COUNTERS[: COUNTERS.index("cost_pusd")]  # the plain counts, before cost and histograms
_SLICE_SUMS = {f"n_{name}": Sum(name) for name in (*_SLICE_COUNTERS, "cost_pusd")}


@dataclass(frozen=True, slots=True)
class Slice:
    """The counters of the calls of one user for one requested name with one status, in the range."""

    user_id: int
    requested: str
    status: str
    calls: int
    fallback_calls: int
    unpriced_calls: int
    estimated_calls: int
    prompt_tokens: int
    cached_tokens: int
    completion_tokens: int
    cost_usd: Decimal


def call_slices(*, filters: CallFilters) -> list[Slice]:
    """One rollup scan that the totals, the requested-name breakdown and the user breakdown share.

    There are at most users × requested names × statuses slices, a few hundred, whatever the calls.
    """
    rows = _rollups(filters, _totals_period(filters)).values("user_id", "requested", "status").annotate(**_SLICE_SUMS)
    return [
        Slice(
            user_id=row["user_id"],
            requested=row["requested"],
            status=row["status"],
            cost_usd=usd(row["n_cost_pusd"]),
            **{name[2:]: int(row[name]) for name in row if name.startswith("n_") and name != "n_cost_pusd"},
        )
        for row in rows
    ]


def totals_of(slices: Iterable[Slice]) -> Totals:
    """The totals of slices already read (`call_totals` reads them first)."""
    sums: dict[str, Any] = defaultdict(int)
    cost = Decimal(0)
    for piece in slices:
        for name in _SLICE_COUNTERS:
            sums[name] += getattr(piece, name)
        sums[f"{piece.status}_calls"] += piece.calls
        cost += piece.cost_usd
    return Totals(
        cost_usd=cost,
        error_calls=sums[f"{Call.Status.ERROR}_calls"],
        rejected_calls=sums[f"{Call.Status.REJECTED}_calls"],
        cache_hit_calls=sums[f"{Call.Status.CACHE_HIT}_calls"],
        **{name: sums[name] for name in _SLICE_COUNTERS},
    )


# ---------------------------------------------------------------------------- series and breakdowns


@dataclass(frozen=True, slots=True)
class SpendSeries:
    """Spend per time bucket (`starts`) for each model that answered calls in the range, biggest first."""

    bucket: str
    starts: list[datetime]
    by_model: dict[int, list[Decimal]]


def bucket_starts(filters: CallFilters) -> list[datetime]:
    step = timedelta(hours=1) if filters.bucket == CallRollup.Period.HOUR else timedelta(days=1)
    first = filters.start.astimezone(UTC)  # a whole hour (whole day for day buckets): see CallFilters
    starts = []
    while first < filters.end:
        starts.append(first)
        first += step
    return starts


def spend_series(*, filters: CallFilters) -> SpendSeries:
    starts = bucket_starts(filters)
    index = {start: i for i, start in enumerate(starts)}
    rows = (
        _rollups(filters, filters.bucket)
        .exclude(model_id=0)
        .values("bucket_start", "model_id")
        .annotate(cost_pusd=Sum("cost_pusd"))
    )
    by_model: dict[int, list[Decimal]] = {}
    for row in rows:
        values = by_model.setdefault(row["model_id"], [Decimal(0)] * len(starts))
        values[index[row["bucket_start"].astimezone(UTC)]] = usd(row["cost_pusd"])
    ordered = sorted(by_model.items(), key=lambda item: (-sum(item[1]), item[0]))
    return SpendSeries(bucket=filters.bucket, starts=starts, by_model=dict(ordered))


@dataclass(frozen=True, slots=True)
class ModelStats:
    """What the calls a model answered cost and how fast they were; percentiles in ms (bucket upper bounds)."""

    model_id: int
    calls: int
    error_calls: int
    fallback_calls: int
    cost_usd: Decimal
    prompt_tokens: int
    completion_tokens: int
    latency_counts: tuple[int, ...]
    ttft_counts: tuple[int, ...]

    @property
    def latency_p50_ms(self) -> int | None:
        return histogram_percentile(self.latency_counts, 50)

    @property
    def latency_p95_ms(self) -> int | None:
        return histogram_percentile(self.latency_counts, 95)

    @property
    def ttft_p50_ms(self) -> int | None:
        return histogram_percentile(self.ttft_counts, 50)

    @property
    def ttft_calls(self) -> int:
        return sum(self.ttft_counts)


def histogram_percentile(counts: Sequence[int], percent: int) -> int | None:
    """The nearest-rank percentile of a histogram: the upper bound (ms) of the bucket holding the
    ceil(n × percent / 100)-th smallest value. None when there is no value, or when that value is in
    the last, unbounded bucket (slower than the largest bound)."""
    total = sum(counts)
    if not total:
        return None
    rank = -(-total * percent // 100)
    seen = 0
    for index, count in enumerate(counts):
        seen += count
        if seen >= rank:
            return HISTOGRAM_BOUNDS_MS[index] if index < len(HISTOGRAM_BOUNDS_MS) else None
    raise AssertionError("unreachable: rank <= total")


def model_stats(*, filters: CallFilters) -> list[ModelStats]:
    """One entry per model that answered calls in the range (calls no model answered are left out), by spend."""
    histograms = {column: Sum(column) for column in LATENCY_COLUMNS + TTFT_COLUMNS}
    rows = (
        _rollups(filters, _totals_period(filters))
        .exclude(model_id=0)
        .values("model_id")
        .annotate(
            n_calls=Sum("calls"),
            n_error_calls=Sum("calls", filter=Q(status=Call.Status.ERROR)),
            n_fallback_calls=Sum("fallback_calls"),
            n_cost_pusd=Sum("cost_pusd"),
            n_prompt_tokens=Sum("prompt_tokens"),
            n_completion_tokens=Sum("completion_tokens"),
            **histograms,
        )
    )
    stats = [
        ModelStats(
            model_id=row["model_id"],
            calls=int(row["n_calls"]),
            error_calls=int(row["n_error_calls"] or 0),
            fallback_calls=int(row["n_fallback_calls"]),
            cost_usd=usd(row["n_cost_pusd"]),
            prompt_tokens=int(row["n_prompt_tokens"]),
            completion_tokens=int(row["n_completion_tokens"]),
            latency_counts=tuple(int(row[c]) for c in LATENCY_COLUMNS),
            ttft_counts=tuple(int(row[c]) for c in TTFT_COLUMNS),
        )
        for row in rows
    ]
    return sorted(stats, key=lambda s: (-s.cost_usd, -s.calls, s.model_id))


@dataclass(frozen=True, slots=True)
class RequestedStats(_CallRates):
    """Error and fallback counts per name the clients asked for (a model or a route)."""

    requested: str
    calls: int
    error_calls: int
    fallback_calls: int


def requested_stats(*, filters: CallFilters) -> list[RequestedStats]:
    return requested_stats_of(call_slices(filters=filters))


def requested_stats_of(slices: Iterable[Slice]) -> list[RequestedStats]:
    """Per requested name, most called first."""
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


def user_spend(*, filters: CallFilters, top: int = TOP_USERS) -> list[UserSpend]:
    return user_spend_of(call_slices(filters=filters), top=top)


def user_spend_of(slices: Iterable[Slice], *, top: int = TOP_USERS) -> list[UserSpend]:
    """The `top` users by spend, then one entry summing every other user (when there are more)."""
    calls: dict[int, int] = defaultdict(int)
    costs: dict[int, Decimal] = defaultdict(Decimal)
    for piece in slices:
        calls[piece.user_id] += piece.calls
        costs[piece.user_id] += piece.cost_usd
    spends = sorted(
        (UserSpend(user_id=user_id, calls=n, cost_usd=costs[user_id]) for user_id, n in calls.items()),
        key=lambda s: (-s.cost_usd, -s.calls, s.user_id),
    )
    if len(spends) <= top:
        return spends
    rest = spends[top:]
    other = UserSpend(
        user_id=0,
        calls=sum(s.calls for s in rest),
        cost_usd=sum((s.cost_usd for s in rest), Decimal(0)),
        others=len(rest),
    )
    return [*spends[:top], other]


def vote_counts(*, filters: CallFilters) -> dict[int, int]:
    """Playground compare-mode votes per chosen model: votes cast in the range by the filtered user(s).

    Votes belong to a user, not to an API key or a route, so only the user and model filters apply.
    """
    votes = PreferenceVote.objects.filter(
        created_at__gte=filters.start, created_at__lt=filters.end, chosen_model__isnull=False
    )
    if filters.user_id is not None:
        votes = votes.filter(user_id=filters.user_id)
    if filters.model_id is not None:
        votes = votes.filter(chosen_model_id=filters.model_id)
    rows = votes.order_by().values("chosen_model_id").annotate(n=Count("id"))
    return dict(sorted(((r["chosen_model_id"], r["n"]) for r in rows), key=lambda item: (-item[1], item[0])))


# ---------------------------------------------------------------------------- budgets


@dataclass(frozen=True, slots=True)
class BudgetUse:
    """This month's use of a budget: `spent_usd` settled, `reserved_usd` held by calls in flight."""

    label: str
    limit_usd: Decimal
    spent_usd: Decimal
    reserved_usd: Decimal
    soft_threshold_pct: int | None

    @property
    def used_pct(self) -> float:
        if not self.limit_usd:
            return 100.0 if self.spent_usd else 0.0
        return round(float(self.spent_usd / self.limit_usd * 100), 2)

    @property
    def bar_pct(self) -> float:
        return min(self.used_pct, 100.0)

    @property
    def reserved_pct(self) -> float:
        if not self.limit_usd:
            return 0.0
        return round(min(float(self.reserved_usd / self.limit_usd * 100), 100.0 - self.bar_pct), 2)

    @property
    def state(self) -> str:
        """The bar's colour: over (at or past the limit), soft (past the soft threshold) or ok."""
        if self.limit_usd and self.spent_usd >= self.limit_usd:
            return "over"
        if self.soft_threshold_pct and self.used_pct >= self.soft_threshold_pct:
            return "soft"
        return "ok"


def budget_uses(*, filters: CallFilters, limit: int = BUDGETS_SHOWN) -> tuple[list[BudgetUse], int]:
    """The budgets that apply to the filtered calls (all, for a viewer of everyone's spend without a user or
    key filter), most spent first, at most `limit`; and how many there are in all."""
    budgets = Budget.objects.select_related("user", "api_key")
    if filters.api_key_id is not None:
        owner = ApiKey.objects.filter(pk=filters.api_key_id).values("user_id")
        budgets = budgets.filter(Q(api_key_id=filters.api_key_id) | Q(user_id__in=owner))
    elif filters.user_id is not None:
        budgets = budgets.filter(Q(user_id=filters.user_id) | Q(api_key__user_id=filters.user_id))
    month = period_start_for(timezone.now())
    # Ranked by this month's spend: a budget last spent in an older month counts as empty.
    this_month = Case(When(period_start=month, then=F("spent_usd")), default=Value(0), output_field=DecimalField())
    shown = budgets.order_by(this_month.desc(), "id")[:limit]
    uses = [
        BudgetUse(
            label=b.label,
            limit_usd=b.limit_usd,
            # The running totals restart lazily, at the first reservation of a new month.
            spent_usd=b.spent_usd if b.period_start == month else Decimal(0),
            reserved_usd=b.reserved_usd if b.period_start == month else Decimal(0),
            soft_threshold_pct=b.soft_threshold_pct,
        )
        for b in shown
    ]
    return uses, (len(uses) if len(uses) < limit else budgets.count())


# ---------------------------------------------------------------------------- names


def model_names(ids: Iterable[int]) -> dict[int, str]:
    ids = set(ids)
    names = dict(ModelEndpoint.objects.filter(pk__in=ids).values_list("pk", "name"))
    return {i: names.get(i, f"deleted model #{i}") for i in ids}


def user_names(ids: Iterable[int]) -> dict[int, str]:
    ids = set(ids)
    User = get_user_model()
    names = dict(User.objects.filter(pk__in=ids).values_list("pk", User.USERNAME_FIELD))
    return {i: names.get(i, "no user" if i == 0 else f"deleted user #{i}") for i in ids}


@dataclass(frozen=True, slots=True)
class FilterChoices:
    """What the filter form offers `viewer`: every model and route, and the users and keys they may see."""

    models: list[tuple[str, str]]
    routes: list[str]
    users: list[str] = field(default_factory=list)
    keys: list[tuple[int, str]] = field(default_factory=list)


def filter_choices(*, viewer: AbstractBaseUser, user_id: int | None = None) -> FilterChoices:
    models = [(name, name) for name in ModelEndpoint.objects.order_by("name").values_list("name", flat=True)]
    routes = list(Route.objects.order_by("name").values_list("name", flat=True))
    users: list[str] = []
    keys = ApiKey.objects.select_related("user").order_by("user__username", "name", "id")
    everyone = viewer_sees_everyone(viewer)
    if everyone:
        User = get_user_model()
        users = list(User.objects.order_by(User.USERNAME_FIELD).values_list(User.USERNAME_FIELD, flat=True))
        if user_id is not None:
            keys = keys.filter(user_id=user_id)
    else:
        keys = keys.filter(user_id=viewer.pk)
    key_choices = [(k.pk, _key_label(k, with_owner=everyone and user_id is None)) for k in keys]
    return FilterChoices(models=models, routes=routes, users=users, keys=key_choices)


def _key_label(key: ApiKey, *, with_owner: bool) -> str:
    label = f"{key.name} ({key.prefix}…)"
    return f"{key.user.get_username()}: {label}" if with_owner else label


# ---------------------------------------------------------------------------- raw rows: recent calls


@dataclass(frozen=True, slots=True)
class CallCursor:
    """A position in the newest-first list of calls: the (created_at, id) of the last row shown."""

    created_at: datetime
    id: int

    def encode(self) -> str:
        raw = f"{self.created_at.astimezone(UTC).isoformat()}|{self.id}"
        return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")

    @classmethod
    def decode(cls, value: str) -> CallCursor:
        """Raises ValueError for anything that `encode` did not produce."""
        try:
            raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).decode()
            created_at, _, pk = raw.partition("|")
            parsed = datetime.fromisoformat(created_at)
            if parsed.tzinfo is None:
                raise ValueError("naive datetime")
            return cls(created_at=parsed.astimezone(UTC), id=int(pk))
        except (binascii.Error, UnicodeDecodeError, ValueError, OverflowError) as exc:
            raise ValueError(f"not a page cursor: {value!r}") from exc


@dataclass(frozen=True, slots=True)
class CallPage:
    calls: list[Call]
    next_cursor: CallCursor | None


def recent_calls(*, filters: CallFilters, before: CallCursor | None = None, limit: int = 25) -> CallPage:
    """The newest calls matching `filters` (older than `before`), keyset-paginated on (created_at, id).

    The raw rows are read only from the newest hours that hold a page's worth of matching calls, as
    the hour rollups tell: without that bound, a filter that matches few or no calls (a route with
    no index of its own, a route and a model that never answered it) would scan the whole range.
    """
    calls = _calls(filters)
    newest_hour = filters.end
    if before is not None:
        calls = calls.filter(Q(created_at__lt=before.created_at) | Q(created_at=before.created_at, id__lt=before.id))
        # The cursor's own hour is read whole: part of it is newer than the cursor, so it cannot count.
        newest_hour = before.created_at.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    calls = calls.filter(created_at__gte=_hours_holding(filters, before=newest_hour, calls=limit + 1))
    page = list(calls.select_related("user", "api_key", "model").order_by("-created_at", "-id")[: limit + 1])
    more = len(page) > limit
    page = page[:limit]
    next_cursor = CallCursor(page[-1].created_at, page[-1].id) if more else None
    return CallPage(calls=page, next_cursor=next_cursor)


def _hours_holding(filters: CallFilters, *, before: datetime, calls: int) -> datetime:
    """The start of the newest whole hours before `before` that hold `calls` matching calls, or all
    there are (per the hour rollups); `before` itself when there are none. Every rollup row counts at
    least one call, so the newest `calls` rows always decide."""
    rows = (
        _rollups(filters, CallRollup.Period.HOUR)
        .filter(bucket_start__lt=before)
        .order_by("-bucket_start")
        .values_list("bucket_start", "calls")[:calls]
    )
    since, seen = before, 0
    for bucket_start, count in rows:
        since, seen = bucket_start, seen + count
        if seen >= calls:
            break
    return since


# ---------------------------------------------------------------------------- raw rows: export

# CSV column -> the Call fields it is made of (the key shows as "name (prefix…)").
_EXPORT_SOURCES = {
    "created_at": ("created_at",),
    "request_id": ("request_id",),
    "user": ("user__username",),
    "api_key": ("api_key__name", "api_key__prefix"),
    "requested": ("requested",),
    "model": ("model__name",),
    "provider": ("provider__name",),
    **{
        name: (name,)
        for name in (
            "status",
            "prompt_tokens",
            "cached_tokens",
            "completion_tokens",
            "usage_estimated",
            "cost_usd",
            "latency_ms",
            "ttft_ms",
            "attempts",
        )
    },
}
EXPORT_COLUMNS = tuple(_EXPORT_SOURCES)
_EXPORT_FIELDS = tuple(field for fields in _EXPORT_SOURCES.values() for field in fields)
_KEY_AT = _EXPORT_FIELDS.index("api_key__name")


def call_export_rows(*, filters: CallFilters, chunk_size: int = 2000) -> Iterator[tuple[Any, ...]]:
    """Every matching call, oldest first, as tuples in `EXPORT_COLUMNS` order (the key as "name (prefix…)").

    Rows come through a server-side cursor (on PostgreSQL) `chunk_size` at a time: memory stays flat
    however many rows there are.
    """
    rows = _calls(filters).order_by("created_at", "id").values_list(*_EXPORT_FIELDS)
    for row in rows.iterator(chunk_size=chunk_size):
        name, prefix = row[_KEY_AT], row[_KEY_AT + 1]
        yield (*row[:_KEY_AT], f"{name} ({prefix}…)" if prefix is not None else None, *row[_KEY_AT + 2 :])


# ---------------------------------------------------------------------------- the JSON document


def usd_str(value: Decimal) -> str:
    """Exact dollars as a string, at least 2 decimals, no trailing zeros beyond: "12.50", "0.000125"."""
    whole, _, fraction = f"{value:f}".partition(".")
    return f"{whole}.{fraction.rstrip('0').ljust(2, '0')}"


@dataclass(frozen=True, slots=True)
class DashboardSummary:
    """What the dashboard shows besides the recent calls, read once per request.

    The page renders `totals` and `budgets` and embeds `dashboard_document(summary)`, the very document
    `/dashboard/data.json` answers: one set of aggregation queries per page view, the same numbers.
    """

    filters: CallFilters
    totals: Totals
    requested: list[RequestedStats]
    series: SpendSeries
    models: list[ModelStats]
    votes: dict[int, int]
    users: list[UserSpend] | None  # only for a viewer of everyone's spend
    budgets: list[BudgetUse]
    budget_count: int
    model_names: dict[int, str]
    user_names: dict[int, str]


def dashboard_summary(*, filters: CallFilters, all_users: bool) -> DashboardSummary:
    """Every aggregate of the dashboard, in a fixed number of queries whatever the number of calls;
    the spend by user only with `all_users` (a viewer of everyone's spend)."""
    slices = call_slices(filters=filters)
    series = spend_series(filters=filters)
    models = model_stats(filters=filters)
    votes = vote_counts(filters=filters)
    users = user_spend_of(slices) if all_users else None
    budgets, budget_count = budget_uses(filters=filters)
    return DashboardSummary(
        filters=filters,
        totals=totals_of(slices),
        requested=requested_stats_of(slices),
        series=series,
        models=models,
        votes=votes,
        users=users,
        budgets=budgets,
        budget_count=budget_count,
        model_names=model_names([*series.by_model, *(m.model_id for m in models), *votes]),
        user_names={} if users is None else user_names(u.user_id for u in users if not u.others),
    )


def dashboard_data(*, filters: CallFilters, all_users: bool) -> dict[str, Any]:
    """The `/dashboard/data.json` document of `filters` (see `dashboard_document`)."""
    return dashboard_document(dashboard_summary(filters=filters, all_users=all_users))


def dashboard_document(summary: DashboardSummary) -> dict[str, Any]:
    """Everything the dashboard charts show, JSON-ready (money as exact decimal strings).

    This is the documented `/dashboard/data.json` document, also embedded in the page;
    `spend_by_user` is present only for a viewer of everyone's spend.
    """
    filters, totals, series, names = summary.filters, summary.totals, summary.series, summary.model_names
    data: dict[str, Any] = {
        "range": {
            "start": filters.start.isoformat(),
            "end": filters.end.isoformat(),
            "bucket": filters.bucket,
        },
        "totals": {
            "spend_usd": usd_str(totals.cost_usd),
            "calls": totals.calls,
            "prompt_tokens": totals.prompt_tokens,
            "cached_tokens": totals.cached_tokens,
            "completion_tokens": totals.completion_tokens,
            "error_calls": totals.error_calls,
            "error_rate": totals.error_rate,
            "fallback_calls": totals.fallback_calls,
            "fallback_rate": totals.fallback_rate,
            "rejected_calls": totals.rejected_calls,
            "cache_hit_calls": totals.cache_hit_calls,
            "unpriced_calls": totals.unpriced_calls,
            "estimated_calls": totals.estimated_calls,
        },
        "spend_over_time": {
            "bucket": series.bucket,
            "starts": [start.isoformat() for start in series.starts],
            "series": [
                {"model": names[model_id], "spend_usd": [usd_str(v) for v in values]}
                for model_id, values in series.by_model.items()
            ],
        },
        "models": [
            {
                "model": names[m.model_id],
                "calls": m.calls,
                "spend_usd": usd_str(m.cost_usd),
                "prompt_tokens": m.prompt_tokens,
                "completion_tokens": m.completion_tokens,
                "error_calls": m.error_calls,
                "error_rate": _ratio(m.error_calls, m.calls),
                "fallback_calls": m.fallback_calls,
                "fallback_rate": _ratio(m.fallback_calls, m.calls),
                "latency_p50_ms": m.latency_p50_ms,
                "latency_p95_ms": m.latency_p95_ms,
                "ttft_p50_ms": m.ttft_p50_ms,
                "ttft_calls": m.ttft_calls,
            }
            for m in summary.models
        ],
        "requested": [
            {
                "requested": r.requested,
                "calls": r.calls,
                "error_calls": r.error_calls,
                "error_rate": r.error_rate,
                "fallback_calls": r.fallback_calls,
                "fallback_rate": r.fallback_rate,
            }
            for r in summary.requested
        ],
        "votes": [{"model": names[model_id], "votes": n} for model_id, n in summary.votes.items()],
        "budgets": [
            {
                "label": b.label,
                "limit_usd": usd_str(b.limit_usd),
                "spent_usd": usd_str(b.spent_usd),
                "reserved_usd": usd_str(b.reserved_usd),
                "soft_threshold_pct": b.soft_threshold_pct,
                "used_pct": b.used_pct,
                "state": b.state,
            }
            for b in summary.budgets
        ],
        "budgets_total": summary.budget_count,
        "histogram_bounds_ms": list(HISTOGRAM_BOUNDS_MS),
    }
    if summary.users is not None:
        data["spend_by_user"] = [
            {
                "user": f"{u.others} other users" if u.others else summary.user_names[u.user_id],
                "calls": u.calls,
                "spend_usd": usd_str(u.cost_usd),
            }
            for u in summary.users
        ]
    return data
