"""The newest calls the filters select, keyset-paginated on the `(created_at, id)` index."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from datetime import UTC, datetime

from django.db.models import Q

from ..models import Call, CallRollup
from .access import CallFilters, calls_matching, rollups_matching


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
    calls = calls_matching(filters=filters)
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
        rollups_matching(filters=filters, period=CallRollup.Period.HOUR)
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
