"""Deleting stored call bodies older than their retention (`ROUTERWEB_BODY_RETENTION_DAYS`).

Run by the call recorder's upkeep (at most every `RETENTION_EVERY_S` per worker) and by
`manage.py purge_call_bodies`. Deletes in chunks, so that a large backlog never holds one long
transaction or lock.
"""

import time
from collections.abc import Callable
from datetime import datetime, timedelta

from django.conf import settings
from django.utils import timezone

from .body_models import CallBody

RETENTION_EVERY_S = 600.0
PURGE_CHUNK = 5000


def call_bodies_purge(*, days: int | None = None, now: datetime | None = None) -> int:
    """Delete the bodies of calls made more than `days` (default: the setting) days before `now`;
    0 days keeps every body. Returns how many were deleted."""
    days = settings.ROUTERWEB_BODY_RETENTION_DAYS if days is None else days
    if days <= 0:
        return 0
    cutoff = (now or timezone.now()) - timedelta(days=days)
    deleted = 0
    while True:
        ids = list(CallBody.objects.filter(created_at__lt=cutoff).values_list("id", flat=True)[:PURGE_CHUNK])
        if not ids:
            return deleted
        deleted += CallBody.objects.filter(id__in=ids).delete()[0]


class BodyRetention:
    """The recorder's upkeep step for bodies: a purge when one is due (never more often than `every_s`)."""

    def __init__(self, *, every_s: float = RETENTION_EVERY_S, clock: Callable[[], float] = time.monotonic):
        self.every_s = every_s
        self.clock = clock
        self._due = clock() + every_s  # not at start-up: a worker's first flushes stay light

    def __call__(self) -> None:
        if self.clock() >= self._due:
            self._due = self.clock() + self.every_s
            call_bodies_purge()


def upkeep_chain(*steps: Callable[[], None]) -> Callable[[], None]:
    """One upkeep that runs `steps` in order; each runs even when one before it failed (the first
    error is raised afterwards, for the recorder to log)."""

    def upkeep() -> None:
        errors = []
        for step in steps:
            try:
                step()
            except Exception as exc:
                errors.append(exc)
        if errors:
            raise errors[0]

    return upkeep
