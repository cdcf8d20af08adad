"""Who may see which calls, and the filters every dashboard read takes.

A viewer with the spend permission sees everyone's calls; anyone else only their own, and asking
for another user's calls or key is refused (`ForbiddenFilter`), never quietly narrowed.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet

from routing.models import ApiKey, ModelEndpoint, Route

from ..models import Call, CallRollup

HOURLY_UP_TO = timedelta(days=2)  # ranges up to this long are charted per hour, longer ones per day
SPEND_PERMISSION = "billing.view_all_spend"


@dataclass(frozen=True, slots=True)
class CallFilters:
    """Calls with `start <= created_at < end`, narrowed by any of the ids / the requested name; `tz`
    (an IANA name) is where the charts' days begin."""

    start: datetime
    end: datetime
    user_id: int | None = None
    api_key_id: int | None = None
    model_id: int | None = None
    requested: str | None = None
    tz: str = "UTC"
    kind: str | None = None  # "chat" or "embeddings": the endpoint the calls were made on

    def __post_init__(self) -> None:
        # Rollups cannot split an hour: a range must start and end on whole UTC hours.
        for bound in (self.start, self.end):
            if bound.tzinfo is None or bound.astimezone(UTC).replace(minute=0, second=0, microsecond=0) != bound:
                raise ValueError(f"range bounds must be aware datetimes on whole hours, not {bound!r}")
        if self.end <= self.start:
            raise ValueError("the range must end after it starts")

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.tz)

    @property
    def bucket(self) -> str:
        """The charts' time step: "day" (days of `tz`) for whole-day ranges over two days, else "hour"."""
        if self.whole_days and self.end - self.start > HOURLY_UP_TO:
            return CallRollup.Period.DAY
        return CallRollup.Period.HOUR

    @property
    def whole_days(self) -> bool:
        """Whether the range starts and ends at midnight in `tz`."""
        return all(bound.astimezone(self.zone).time() == time.min for bound in (self.start, self.end))

    @property
    def whole_utc_days(self) -> bool:
        return all(bound.astimezone(UTC).time() == time.min for bound in (self.start, self.end))

    @property
    def bucket_period(self) -> str:
        """The rollup rows the chart buckets are summed from: day rows are UTC days, so days of another
        zone are summed from hour rows (exact: every zone offset the form takes is whole hours)."""
        if self.bucket == CallRollup.Period.DAY and self.whole_utc_days:
            return CallRollup.Period.DAY
        return CallRollup.Period.HOUR

    def previous(self) -> CallFilters:
        """The same filters over the period of the same length just before this one."""
        return replace(self, start=self.start - (self.end - self.start), end=self.start)

    @property
    def totals_period(self) -> str:
        """Whole UTC-day ranges are summed from day rows (24 times fewer), others from hour rows."""
        return CallRollup.Period.DAY if self.whole_utc_days else CallRollup.Period.HOUR


class ForbiddenFilter(PermissionDenied):
    """A filter asks for calls the viewer may not see; `param` names it."""

    def __init__(self, param: str, message: str):
        super().__init__(message)
        self.param = param


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
    tz: str = "UTC",
    kind: str | None = None,
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
        tz=tz,
        kind=kind,
    )


def rollups_matching(*, filters: CallFilters, period: str) -> QuerySet[CallRollup]:
    """The `period` rollup rows of the filters' range, user, key, model and route, unordered."""
    rows = CallRollup.objects.filter(period=period, bucket_start__gte=filters.start, bucket_start__lt=filters.end)
    return _narrowed(rows, filters).order_by()


def calls_matching(*, filters: CallFilters) -> QuerySet[Call]:
    """The raw call rows the filters select."""
    calls = Call.objects.filter(created_at__gte=filters.start, created_at__lt=filters.end)
    return _narrowed(calls, filters)


def _narrowed(rows: QuerySet, filters: CallFilters) -> QuerySet:
    """Rows (calls or rollups: the same field names) of the filters' user, key, model, route and kind."""
    dimensions = {
        "user_id": filters.user_id,
        "api_key_id": filters.api_key_id,
        "model_id": filters.model_id,
        "requested": filters.requested,
        "kind": filters.kind,
    }
    return rows.filter(**{name: value for name, value in dimensions.items() if value is not None})
