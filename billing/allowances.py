"""This worker's budget allowances: shares of budgets reserved in one write, spent call by call in memory.

A worker reserves a share of a budget at once, an allowance (a `BudgetAllowance` row, counted in the
budget's `reserved_usd`), and draws each call's worst case from it here, under a lock, without I/O
(why: docs/architecture.md, decisions). The database side, and
the rules that keep a budget exact across workers, are in billing/budgets.py.

An allowance is usable while all of these hold:
- it is for the current month and for the registry version the call was routed with (a budget that
  was edited or deleted is granted again, never spent from an old allowance);
- its worker confirmed it in the database less than `usable_s` ago (granted, topped up or renewed),
  counted from before the confirming statement was sent. Other workers reclaim an allowance only
  after its expiry, which is later than that, so a worker that stalled never spends from an
  allowance that may be gone.

This module holds no database code: `AllowanceLedger` is plain bookkeeping, easy to test alone.
"""

import asyncio
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import NamedTuple


class Reservation(NamedTuple):
    """A call's worst case set aside on one budget, from one of this worker's allowances.

    `allowance_id` is None for reservations made on the budget row directly (rows spooled by
    earlier versions, which settle the same way as before). A tuple: made for every budgeted call,
    and spooled as a JSON list (`[budget_id, "amount", "period_start", allowance_id]`), which
    `from_list` reads back.
    """

    budget_id: int
    amount: Decimal
    period_start: date
    allowance_id: str | None = None

    @classmethod
    def from_list(cls, value: list) -> "Reservation":
        allowance_id = value[3] if len(value) > 3 else None
        return cls(int(value[0]), Decimal(value[1]), date.fromisoformat(value[2]), allowance_id)


@dataclass(frozen=True, slots=True)
class Grant:
    """What the database granted on one budget: `amount` more on allowance `allowance_id`."""

    budget_id: int
    allowance_id: str
    amount: Decimal
    period_start: date
    topped_up: bool  # False: a new allowance (the worker's previous one, if any, was gone or stale)
    capped: bool = False  # less than asked for: the budget is getting near its limit


@dataclass(frozen=True, slots=True)
class Refill:
    """A top-up of one allowance asked for ahead of need (by the recorder's thread, not by a call)."""

    budget_id: int
    allowance_id: str
    period_start: date
    registry_version: str
    want: Decimal


@dataclass(slots=True, eq=False)
class _Allowance:
    id: str
    budget_id: int
    period_start: date
    registry_version: str
    free: Decimal
    usable_until: float
    last_draw: float
    last_grant: Decimal = Decimal(0)
    granted_at: float = 0.0
    capped: bool = False  # its last grant was cut short by the budget's headroom: no refill ahead of need
    in_flight: int = 0
    topping_up: int = 0  # grants being asked for it: it must not be handed back meanwhile
    retired: bool = False  # replaced: its free share is no longer spent, it waits for its calls to end


class AllowanceLedger:
    def __init__(self, *, usable_s: float, idle_s: float, clock: Callable[[], float] = time.monotonic):
        self.usable_s = usable_s
        self.idle_s = idle_s
        self.clock = clock
        self._lock = threading.Lock()
        self._current: dict[int, _Allowance] = {}  # budget id -> the allowance its calls draw from
        self._held: dict[str, _Allowance] = {}  # every allowance this worker still holds, retired ones too
        self._grants_in_flight: dict[int, asyncio.Future] = {}  # budget id -> the grant being asked for it

    def draw(
        self, budget_ids: list[int], amount: Decimal, period_start: date, registry_version: str
    ) -> list[Reservation] | dict[int, Decimal]:
        """Draw `amount` on every budget, or on none.

        Returns the reservations, or, when an allowance is missing or too small, what each such
        budget lacks (with an allowance that is not usable, the whole amount).
        """
        with self._lock:
            return self._draw_all_locked(budget_ids, amount, period_start, registry_version)

    def add_grants_and_draw(
        self,
        grants: Iterable[Grant],
        *,
        confirmed_at: float,
        budget_ids: list[int],
        amount: Decimal,
        period_start: date,
        registry_version: str,
    ) -> list[Reservation] | dict[int, Decimal]:
        """Add what the database granted (confirmed at `confirmed_at`), then draw the call's share."""
        with self._lock:
            for grant in grants:
                self._add_grant_locked(grant, confirmed_at, registry_version)
            return self._draw_all_locked(budget_ids, amount, period_start, registry_version)

    def settle(self, reservations: Iterable[Reservation], cost: Decimal | None) -> None:
        """A call ended with `cost` (None: unknown, counted as zero): what it did not use is free again."""
        spent = cost or Decimal(0)
        with self._lock:
            for reservation in reservations:
                allowance = self._held.get(reservation.allowance_id)
                if allowance is None:
                    continue
                allowance.in_flight -= 1
                if not allowance.retired:
                    allowance.free += reservation.amount - min(spent, reservation.amount)

    # ------------------------------------------------------------------ upkeep (the recorder's thread)

    def take_returnable(self, *, everything: bool = False) -> list[str]:
        """Remove and return the ids of allowances to hand back: no call in flight, and retired or idle
        for `idle_s` (or all of them with `everything`, at shutdown)."""
        now = self.clock()
        with self._lock:
            ids = [
                allowance.id
                for allowance in self._held.values()
                if allowance.in_flight == 0
                and allowance.topping_up == 0
                and (everything or allowance.retired or now - allowance.last_draw >= self.idle_s)
            ]
            for allowance_id in ids:
                self._forget_locked(self._held[allowance_id])
            return ids

    def refills_due(self, *, below_share: Decimal, growth_s: float) -> list[Refill]:
        """The allowances to top up ahead of need: those whose free share fell under `below_share` of
        their last grant, unless that grant was capped (near the limit, grants stay on demand, one
        call's worst case at a time). Each is marked as being topped up until `refill_ended`."""
        now = self.clock()
        refills = []
        with self._lock:
            for allowance in self._current.values():
                if allowance.capped or allowance.topping_up or allowance.free >= allowance.last_grant * below_share:
                    continue
                allowance.topping_up += 1
                want = self._next_grant_locked(allowance, now, growth_s)
                refills.append(
                    Refill(allowance.budget_id, allowance.id, allowance.period_start, allowance.registry_version, want)
                )
        return refills

    def refill_ended(self, refills: list[Refill], grants: Iterable[Grant], *, confirmed_at: float) -> None:
        """The refills are over, with what the database granted for them (confirmed at `confirmed_at`)."""
        versions = {refill.budget_id: refill.registry_version for refill in refills}
        with self._lock:
            for grant in grants:
                self._add_grant_locked(grant, confirmed_at, versions[grant.budget_id])
            for refill in refills:
                allowance = self._held.get(refill.allowance_id)
                if allowance is not None:
                    allowance.topping_up -= 1

    def held_ids(self) -> list[str]:
        with self._lock:
            return list(self._held)

    def confirm(self, existing_ids: set[str], ids: Iterable[str], *, confirmed_at: float) -> None:
        """The database renewed `existing_ids` among `ids` at `confirmed_at`; the others are gone (reclaimed)."""
        with self._lock:
            for allowance_id in ids:
                allowance = self._held.get(allowance_id)
                if allowance is None:
                    continue
                if allowance_id in existing_ids:
                    allowance.usable_until = max(allowance.usable_until, confirmed_at + self.usable_s)
                else:
                    self._retire_locked(allowance)

    def clear(self) -> None:
        """Forget every allowance (tests, whose databases are emptied between them)."""
        with self._lock:
            self._current.clear()
            self._held.clear()
            self._grants_in_flight.clear()

    # ------------------------------------------------------------------ one grant at a time per budget

    def grant_in_flight(self, budget_ids: Iterable[int]) -> asyncio.Future | None:
        """A grant this event loop is already asking for one of these budgets, to wait for instead of asking again."""
        loop = asyncio.get_running_loop()
        with self._lock:
            for budget_id in budget_ids:
                future = self._grants_in_flight.get(budget_id)
                if future is not None and future.get_loop() is loop:
                    return future
        return None

    def grant_started(
        self, budget_ids: Iterable[int], period_start: date, registry_version: str
    ) -> tuple[asyncio.Future, dict[int, str | None]]:
        """Mark a grant on these budgets as asked for; returns it (to wait for) and, per budget, the
        allowance the grant should top up (None: start a new one), kept until `grant_ended`."""
        future = asyncio.get_running_loop().create_future()
        topping_up = {}
        with self._lock:
            for budget_id in budget_ids:
                self._grants_in_flight.setdefault(budget_id, future)
                allowance = self._current.get(budget_id)
                if allowance is not None and (allowance.period_start, allowance.registry_version) == (
                    period_start,
                    registry_version,
                ):
                    allowance.topping_up += 1
                    topping_up[budget_id] = allowance.id
                else:
                    topping_up[budget_id] = None
        return future, topping_up

    def next_grant(self, allowance_id: str | None, *, growth_s: float) -> Decimal:
        """What the next grant on this allowance should be, from its last: twice as much if that was
        used up within `growth_s`, else as much again (0 for a new allowance)."""
        with self._lock:
            allowance = self._held.get(allowance_id)
            if allowance is None:
                return Decimal(0)
            return self._next_grant_locked(allowance, self.clock(), growth_s)

    def grant_ended(self, future: asyncio.Future, topping_up: dict[int, str | None]) -> None:
        with self._lock:
            for budget_id in [b for b, f in self._grants_in_flight.items() if f is future]:
                del self._grants_in_flight[budget_id]
            for allowance_id in topping_up.values():
                allowance = self._held.get(allowance_id)
                if allowance is not None:
                    allowance.topping_up -= 1
        future.set_result(None)

    # ------------------------------------------------------------------ internals, with the lock held

    def _add_grant_locked(self, grant: Grant, confirmed_at: float, registry_version: str) -> None:
        now = self.clock()
        allowance = self._held.get(grant.allowance_id) if grant.topped_up else None
        if allowance is None:
            allowance = _Allowance(
                grant.allowance_id, grant.budget_id, grant.period_start, registry_version, Decimal(0), 0.0, now
            )
            self._replace_locked(allowance)
        allowance.free += grant.amount
        allowance.last_grant, allowance.granted_at, allowance.capped = grant.amount, now, grant.capped
        allowance.usable_until = max(allowance.usable_until, confirmed_at + self.usable_s)

    @staticmethod
    def _next_grant_locked(allowance: _Allowance, now: float, growth_s: float) -> Decimal:
        fast = now - allowance.granted_at < growth_s
        return allowance.last_grant * 2 if fast else allowance.last_grant

    def _draw_all_locked(
        self, budget_ids: list[int], amount: Decimal, period_start: date, registry_version: str
    ) -> list[Reservation] | dict[int, Decimal]:
        # Every budgeted request comes through here: one pass to check, one to draw, nothing else called.
        now = self.clock()
        current = self._current
        short = {}
        for budget_id in budget_ids:
            allowance = current.get(budget_id)
            if (
                allowance is None
                or allowance.period_start != period_start
                or allowance.registry_version != registry_version
                or now >= allowance.usable_until
            ):
                short[budget_id] = amount
            elif allowance.free < amount:
                short[budget_id] = amount - allowance.free
        if short:
            return short
        reservations = []
        for budget_id in budget_ids:
            allowance = current[budget_id]
            allowance.free -= amount
            allowance.in_flight += 1
            allowance.last_draw = now
            reservations.append(Reservation(budget_id, amount, period_start, allowance.id))
        return reservations

    def _replace_locked(self, allowance: _Allowance) -> None:
        previous = self._current.get(allowance.budget_id)
        if previous is not None:
            self._retire_locked(previous)
        self._current[allowance.budget_id] = allowance
        self._held[allowance.id] = allowance

    def _retire_locked(self, allowance: _Allowance) -> None:
        allowance.retired = True
        allowance.free = Decimal(0)
        if self._current.get(allowance.budget_id) is allowance:
            del self._current[allowance.budget_id]

    def _forget_locked(self, allowance: _Allowance) -> None:
        del self._held[allowance.id]
        if self._current.get(allowance.budget_id) is allowance:
            del self._current[allowance.budget_id]
