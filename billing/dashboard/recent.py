"""The newest calls the filters select, keyset-paginated on the `(created_at, id)` index.

The dashboard's recent calls use the range, user, key, model and route filters; the call list
(`/calls/`) narrows further (`CallNarrowing`: status, fallback, estimated usage, a request id or
text in stored bodies).
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from datetime import UTC, datetime

from django.db.models import Q, QuerySet, Sum

from ..call_bodies import call_bodies_matching
from ..models import Call, CallBody, CallRollup
from ..rollups import AnsweredByFallback
from .access import CallFilters, calls_matching, rollups_matching

FALLBACK = "fallback"  # a status filter of the call list: answered by a candidate other than the first
REQUEST_ID = re.compile(r"req_\S+")  # a request id (routing/call_context.py): looked up as one, not as text
# A text search reads the calls of this many matching bodies at most per page (the newest first): calls
# filtered out by the other filters may leave a page short, never a wrong one.
SEARCH_BODIES_MAX = 1000


@dataclass(frozen=True, slots=True)
class CallNarrowing:
    """The call list's filters beyond the dashboard's: `status` (a Call status or "fallback"),
    `estimated` (True/False: usage estimated or not), `search` (a request id, or text in stored bodies)."""

    status: str = ""
    estimated: bool | None = None
    search: str = ""

    def calls(self, calls: QuerySet[Call], *, filters: CallFilters, before: CallCursor | None) -> QuerySet[Call]:
        if self.status == FALLBACK:
            calls = calls.filter(AnsweredByFallback("attempts"))
        elif self.status:
            calls = calls.filter(status=self.status)
        if self.estimated is not None:
            calls = calls.filter(usage_estimated=self.estimated)
        if self.search and REQUEST_ID.fullmatch(self.search):
            calls = calls.filter(request_id=self.search)
        elif self.search:
            calls = calls.filter(request_id__in=self._bodies_matching(filters, before))
        return calls

    def _bodies_matching(self, filters: CallFilters, before: CallCursor | None) -> QuerySet:
        """The request ids of the newest SEARCH_BODIES_MAX bodies of the range (older than the page
        cursor) that match the search: the text index finds them, the calls are then read by request id,
        so a search never walks the range's calls."""
        bodies = CallBody.objects.filter(created_at__gte=filters.start, created_at__lt=filters.end)
        if before is not None:
            bodies = bodies.filter(created_at__lte=before.created_at)
        return call_bodies_matching(self.search, bodies=bodies).order_by("-created_at")[:SEARCH_BODIES_MAX]

    def rollups(self, rows: QuerySet[CallRollup]) -> QuerySet[CallRollup]:
        """The rollup rows that count the matching calls (an upper bound when searching)."""
        if self.status and self.status != FALLBACK:
            rows = rows.filter(status=self.status)
        return rows

    @property
    def countable(self) -> bool:
        """Whether the rollups count the matching calls: not a text search, and not fallbacks by
        estimate (counted apart only)."""
        return not self.search and not (self.status == FALLBACK and self.estimated is not None)

    def counted(self, row: dict) -> int:
        """How many of a rollup row's calls match (the narrowing is `countable`)."""
        if self.status == FALLBACK:
            return row["fallback_calls"]
        if self.estimated is True:
            return row["estimated_calls"]
        if self.estimated is False:
            return row["calls"] - row["estimated_calls"]
        return row["calls"]


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


def recent_calls(
    *, filters: CallFilters, before: CallCursor | None = None, limit: int = 25, narrowing: CallNarrowing | None = None
) -> CallPage:
    """The newest calls matching `filters` (older than `before`), keyset-paginated on (created_at, id).

    The raw rows are read only from the newest hours that hold a page's worth of matching calls, as
    the hour rollups tell: without that bound, a filter that matches few or no calls (a route with
    no index of its own, a route and a model that never answered it) would scan the whole range.
    """
    narrowing = narrowing or CallNarrowing()
    calls = narrowing.calls(calls_matching(filters=filters), filters=filters, before=before)
    newest_hour = filters.end
    if before is not None:
        calls = calls.filter(Q(created_at__lt=before.created_at) | Q(created_at=before.created_at, id__lt=before.id))
        # The cursor's own hour is read whole: part of it is newer than the cursor, so it cannot count.
        newest_hour = before.created_at.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    calls = calls.filter(created_at__gte=_hours_holding(filters, narrowing, before=newest_hour, calls=limit + 1))
    page = list(calls.select_related("user", "api_key", "model").order_by("-created_at", "-id")[: limit + 1])
    more = len(page) > limit
    page = page[:limit]
    next_cursor = CallCursor(page[-1].created_at, page[-1].id) if more else None
    return CallPage(calls=page, next_cursor=next_cursor)


def _hours_holding(filters: CallFilters, narrowing: CallNarrowing, *, before: datetime, calls: int) -> datetime:
    """The start of the newest whole hours before `before` that hold `calls` matching calls, or all
    there are (per the hour rollups); `before` itself when there are none. Without a narrowing every
    rollup row counts at least one call, so the newest `calls` rows always decide; with one, rows are
    read until enough calls match (a narrowing the rollups cannot count reads the whole range)."""
    rows = (
        narrowing.rollups(rollups_matching(filters=filters, period=CallRollup.Period.HOUR))
        .filter(bucket_start__lt=before)
        .order_by("-bucket_start")
        .values("bucket_start", "calls", "estimated_calls", "fallback_calls")
    )
    if narrowing == CallNarrowing():
        rows = rows[:calls]
    elif not narrowing.countable:
        return filters.start
    else:  # summed per hour by the database: a rare match would otherwise walk every row of every hour
        rows = rows.values("bucket_start").annotate(
            calls=Sum("calls"), estimated_calls=Sum("estimated_calls"), fallback_calls=Sum("fallback_calls")
        )
    since, seen = before, 0
    for row in rows.iterator(chunk_size=2000):
        since, seen = row["bucket_start"], seen + narrowing.counted(row)
        if seen >= calls:
            break
    return since
