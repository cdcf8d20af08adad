"""Budgets: reserve a call's worst case before it runs, settle with its real cost after.

A budget row holds this month's `spent_usd` (settled costs) and `reserved_usd` (set aside, not
spent yet), and never lets the two together pass `limit_usd`. Workers do not reserve call by call
in the database: a worker asks for an allowance, a share of the budget reserved in one transaction
under the budget row's lock, and draws each call's worst case from it in memory
(billing/allowances.py). What keeps a budget exact across any number of workers:

- **Granting** locks the call's budgets in id order and grants on all of them or on none. It grants
  at least what the call lacks after the worker's own unused share, so that share never makes it
  refuse a call the budget has room for; at most `ALLOWANCE_CALLS` worst cases (or, for a busy
  worker, twice its last grant if that lasted under `ALLOWANCE_GROWTH_S`, else as much again: it
  asks about once a second or less), and at most `ALLOWANCE_HEADROOM_SHARE` of what the budget
  has left. Near the limit a grant is one call's worst case: as exact as reserving every call on
  its own. A refusal is a 429 naming the budget.
- **Refilling**: a call that finds its allowance short waits for the grant (a transaction, tens of
  ms on a busy worker). So the recorder's thread tops an allowance up ahead of need once less than
  `ALLOWANCE_REFILL_BELOW` of its last grant is left, sized as above, unless that grant was capped
  by the headroom share: near the limit grants stay on demand.
- **Settling** happens with the call row's insert (billing/calls.py), in the same transaction, so it
  happens once whatever the call's outcome: the row's cost (up to its worst case) leaves the
  allowance and the budget's `reserved_usd`, and the cost is added to `spent_usd`.
- **Handing back**: a worker returns an allowance idle for `ALLOWANCE_IDLE_S` (and all at shutdown):
  the allowance row is deleted and what it still held leaves `reserved_usd`. A call row settled
  after that adds its cost to `spent_usd` only, as its share left with the allowance.
- **Dead workers**: a worker renews its allowances every `ALLOWANCE_RENEW_S`. One that died stops
  renewing; after `ALLOWANCE_TTL_S` its allowances are reclaimed (the same hand-back) by the next
  grant on their budget, and by the sweep of any worker that holds allowances itself.
  Its spooled rows, replayed later, settle as above. A live worker only draws from an allowance it
  confirmed less than `ALLOWANCE_USABLE_S` ago, so never from one that may have been reclaimed.

What a worker holds unused counts as reserved for the others: at most a tenth of the headroom per
grant (with a refill, what was left of the last grant too), for at most `ALLOWANCE_IDLE_S` after its
last call (or `ALLOWANCE_TTL_S` if it died).

Rows the database locks, always in this order: the budgets (by id), then their allowances.
"""

import logging
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import ROUND_DOWN, Decimal

from django.db import DatabaseError, connection, transaction
from django.db.models import F, QuerySet
from django.db.models.functions import Greatest
from django.utils import timezone

from routerweb.db_executor import db_executor
from routing.snapshot import ModelSnap

from .allowances import AllowanceLedger, Grant, Reservation
from .models import COST_DECIMAL_PLACES, Budget, BudgetAllowance
from .money import usd_figure
from .pricing import PriceLike, cost_for_usage

logger = logging.getLogger("routerweb.budgets")

# Output cap assumed for the worst case when neither the request nor the model sets one. A model
# that can write more needs its `max_output_tokens` in the registry for its budgets to hold.
DEFAULT_MAX_OUTPUT_TOKENS = 4096

ALLOWANCE_CALLS = 100  # a grant covers up to this many worst cases of the call that asked ...
ALLOWANCE_HEADROOM_SHARE = Decimal("0.1")  # ... and up to this share of what the budget has left
ALLOWANCE_GROWTH_S = 1.0  # a grant used up faster than this is followed by one twice as big
ALLOWANCE_TTL_S = 30.0  # an allowance not renewed for this long belongs to a dead worker
ALLOWANCE_USABLE_S = 20.0  # a worker draws only this long after confirming its allowance
ALLOWANCE_RENEW_S = 5.0  # how often a worker renews its allowances and reclaims dead workers' ones
ALLOWANCE_IDLE_S = 2.0  # an allowance with no call for this long goes back to its budget
ALLOWANCE_REFILL_BELOW = Decimal("0.5")  # topped up ahead of need once this share of its last grant is left
GRANT_TRIES = 4

COST_QUANTUM = Decimal(1).scaleb(-COST_DECIMAL_PLACES)


class BudgetExceeded(Exception):
    def __init__(self, budget: Budget, amount: Decimal):
        self.budget = budget
        self.amount = amount
        spend = budget.spent_usd + budget.reserved_usd
        super().__init__(
            f"Budget exceeded: the monthly budget of {budget.label} is ${_usd(budget.limit_usd)} and "
            f"${_usd(spend)} is already spent or reserved; this call could cost up to ${_usd(amount)}."
        )


class BudgetsUnavailable(Exception):
    """The database could not be asked (down, or out of connections): the call cannot be reserved."""


def period_start_for(at: datetime) -> date:
    return date(at.year, at.month, 1)


def worst_case_cost(
    priced: Iterable[tuple[ModelSnap, PriceLike]], *, prompt_tokens: int, max_tokens: int | None, choices: int = 1
) -> Decimal:
    """The most this call can cost: the dearest candidate, with every allowed output token used.

    `priced` holds each candidate with its price in force (an unpriced one would make it a guess);
    `prompt_tokens` must be an upper bound (billing.pricing.prompt_tokens_bound); output is
    `max_tokens` (0 for an embedding, which has none), else the model's `max_output_tokens`, else
    `DEFAULT_MAX_OUTPUT_TOKENS`, for each of `choices`. Every prompt token is priced at the dearer of
    the input and the cache-write price (a provider may write the whole prompt to its cache).
    """
    worst = Decimal(0)
    for model, price in priced:
        cap = max_tokens if max_tokens is not None else (model.max_output_tokens or DEFAULT_MAX_OUTPUT_TOKENS)
        output = cap * choices
        for written in (0, prompt_tokens):
            cost = cost_for_usage(
                price,
                prompt_tokens=prompt_tokens,
                cached_tokens=0,
                completion_tokens=output,
                cache_write_tokens=written,
            )
            worst = max(worst, cost)
    return worst


_ledger = AllowanceLedger(usable_s=ALLOWANCE_USABLE_S, idle_s=ALLOWANCE_IDLE_S)


def budget_allowances() -> AllowanceLedger:
    """This worker process's allowances."""
    return _ledger


# ---------------------------------------------------------------------------- the request path


async def budgets_reserve(
    *, budget_ids: list[int], amount: Decimal, at: datetime, registry_version: str
) -> list[Reservation]:
    """Reserve `amount` on every budget (distinct ids), or on none: raises BudgetExceeded naming one that refuses.

    Drawn from this worker's allowances when they have room (no I/O); otherwise a grant is asked
    for in a database thread first (one at a time per budget: calls that find one in flight wait
    for it and draw from what it brings).
    """
    ids = budget_ids  # narrowed below to the budgets that still exist
    period = period_start_for(at)
    grants_asked = 0
    while True:
        drawn = _ledger.draw(ids, amount, period, registry_version)
        if isinstance(drawn, list):
            return drawn
        if grants_asked == GRANT_TRIES:
            break
        in_flight = _ledger.grant_in_flight(drawn)
        if in_flight is not None:
            await in_flight
            continue
        grants_asked += 1
        drawn, ids = await _grant_and_draw(drawn, ids, amount, period, registry_version)
        if isinstance(drawn, list):
            return drawn
    # Other calls of this worker drew each grant before this one could: the budget is all but spent.
    raise BudgetExceeded(await _budgets_read(_refusing_budget, next(iter(drawn)), period), amount)


def budgets_call_ended(reservations: list[Reservation], cost: Decimal | None) -> None:
    """A call is over and cost `cost`: what it reserved and did not spend can be drawn again."""
    if reservations:
        _ledger.settle(reservations, cost)


@dataclass(frozen=True, slots=True)
class GrantRequest:
    budget_id: int
    allowance_id: str | None  # the worker's allowance on this budget, topped up if it still stands
    need: Decimal  # grant at least this much, or refuse
    want: Decimal  # and at most this much


class GrantRefused(Exception):
    def __init__(self, budget_id: int):
        self.budget_id = budget_id


async def _grant_and_draw(
    short: dict[int, Decimal], ids: list[int], amount: Decimal, period: date, registry_version: str
) -> tuple[list[Reservation] | dict[int, Decimal], list[int]]:
    in_flight, topping_up = _ledger.grant_started(short, period, registry_version)
    requests = [
        GrantRequest(budget_id, topping_up[budget_id], need, _grant_wanted(topping_up[budget_id], amount))
        for budget_id, need in short.items()
    ]
    confirmed_at = _ledger.clock()
    try:
        try:
            grants = await _budgets_read(grant_in_transaction, requests, period)
        except GrantRefused as refused:
            raise BudgetExceeded(await _budgets_read(_refusing_budget, refused.budget_id, period), amount) from None
        # A budget deleted since the registry snapshot was read has nothing left to reserve on.
        granted = {grant.budget_id for grant in grants}
        ids = [budget_id for budget_id in ids if budget_id in granted or budget_id not in short]
        drawn = _ledger.add_grants_and_draw(
            grants,
            confirmed_at=confirmed_at,
            budget_ids=ids,
            amount=amount,
            period_start=period,
            registry_version=registry_version,
        )
    finally:
        _ledger.grant_ended(in_flight, topping_up)
    return drawn, ids


def _grant_wanted(allowance_id: str | None, amount: Decimal) -> Decimal:
    """ALLOWANCE_CALLS worst cases, or more for a busy worker: twice its last grant if that one lasted
    under ALLOWANCE_GROWTH_S, else as much again (capped by the share of the headroom when granted)."""
    return max(amount * ALLOWANCE_CALLS, _ledger.next_grant(allowance_id, growth_s=ALLOWANCE_GROWTH_S))


async def _budgets_read(func, *args):
    try:
        return await db_executor.run(func, *args)
    except DatabaseError as exc:
        raise BudgetsUnavailable(str(exc)) from exc


def grant_in_transaction(requests: list[GrantRequest], period: date) -> list[Grant]:
    """Grant on every requested budget or raise GrantRefused (nothing granted) for the first that lacks `need`."""
    expires_at = timezone.now() + timedelta(seconds=ALLOWANCE_TTL_S)
    budget_ids = [request.budget_id for request in requests]
    with transaction.atomic():
        # Dead workers' expired allowances on these budgets go back first (this locks the budgets).
        allowances_release(BudgetAllowance.objects.filter(budget_id__in=budget_ids, expires_at__lt=timezone.now()))
        budgets = _budgets_locked(budget_ids)
        grants = []
        for request in sorted(requests, key=lambda r: r.budget_id):
            budget = budgets.get(request.budget_id)
            if budget is None:
                continue
            if budget.period_start != period:  # a new month starts from zero
                budget.spent_usd = budget.reserved_usd = Decimal(0)
            headroom = budget.limit_usd - budget.spent_usd - budget.reserved_usd
            if headroom < request.need:
                raise GrantRefused(budget.id)
            share = (headroom * ALLOWANCE_HEADROOM_SHARE).quantize(COST_QUANTUM, ROUND_DOWN)
            amount = max(request.need, min(request.want, share))
            Budget.objects.filter(id=budget.id).update(
                period_start=period, spent_usd=budget.spent_usd, reserved_usd=budget.reserved_usd + amount
            )
            grants.append(_allowance_add(request, amount, period, expires_at, capped=amount < request.want))
        return grants


def _budgets_locked(budget_ids: Iterable[int]) -> dict[int, Budget]:
    budgets = Budget.objects.select_for_update().filter(id__in=set(budget_ids)).order_by("id")
    return {budget.id: budget for budget in budgets}


def _allowance_add(
    request: GrantRequest, amount: Decimal, period: date, expires_at: datetime, *, capped: bool
) -> Grant:
    if request.allowance_id is not None and BudgetAllowance.objects.filter(
        id=request.allowance_id, budget_id=request.budget_id, period_start=period
    ).update(amount_usd=F("amount_usd") + amount, expires_at=expires_at):
        return Grant(request.budget_id, request.allowance_id, amount, period, topped_up=True, capped=capped)
    allowance = BudgetAllowance.objects.create(
        id=uuid.uuid4(), budget_id=request.budget_id, period_start=period, amount_usd=amount, expires_at=expires_at
    )
    return Grant(request.budget_id, str(allowance.id), amount, period, topped_up=False, capped=capped)


def _refusing_budget(budget_id: int, period: date) -> Budget:
    budget = Budget.objects.select_related("user", "api_key").get(id=budget_id)
    if budget.period_start != period:
        budget.spent_usd = budget.reserved_usd = Decimal(0)
    return budget


# ---------------------------------------------------------------------------- settling (the row writer)


def budgets_settle(settlements: Iterable[tuple[Reservation, Decimal | None]]) -> None:
    """Replace reservations by real costs (an unknown cost counts as zero). Call inside a transaction.

    Summed per budget and allowance first: a batch of calls makes one UPDATE each.
    """
    totals: dict[tuple[int, date, str], list[Decimal]] = {}
    for reservation, cost in settlements:
        spent = cost or Decimal(0)
        # From an allowance, a call takes what it spent (up to its worst case); the rest stays in the
        # allowance for the next calls. Reserved on the budget row directly, it releases all of it.
        released = reservation.amount if reservation.allowance_id is None else min(spent, reservation.amount)
        key = (reservation.budget_id, reservation.period_start, reservation.allowance_id or "")
        total = totals.setdefault(key, [Decimal(0), Decimal(0)])
        total[0] += released
        total[1] += spent
    if not totals:
        return
    # Plain SQL: the row writer settles every batch of calls, and the ORM's statement building cost
    # more than the statements (2.7 ms against 0.5 ms a batch).
    ops = connection.ops
    with connection.cursor() as cursor:
        ids = sorted({budget_id for budget_id, _, _ in totals})
        lock = " FOR UPDATE" if connection.features.has_select_for_update else ""
        cursor.execute(
            f"SELECT id FROM billing_budget WHERE id IN ({', '.join(['%s'] * len(ids))}) ORDER BY id{lock}", ids
        )
        for (budget_id, period, allowance_id), (released, spent) in sorted(totals.items()):
            released, spent = ops.adapt_decimalfield_value(released), ops.adapt_decimalfield_value(spent)
            if allowance_id:
                allowance_pk = BudgetAllowance._meta.pk.get_db_prep_value(uuid.UUID(allowance_id), connection)
                cursor.execute(SETTLE_ALLOWANCE, [released, released, allowance_pk])
                if cursor.rowcount == 0:
                    released = ops.adapt_decimalfield_value(
                        Decimal(0)
                    )  # handed back or reclaimed already, with what it held
            cursor.execute(SETTLE_BUDGET, [released, released, spent, budget_id, ops.adapt_datefield_value(period)])


# Portable SQL (GREATEST is PostgreSQL's; SQLite spells it MAX): an amount never goes below zero.
SETTLE_ALLOWANCE = """
UPDATE billing_budgetallowance
SET amount_usd = CASE WHEN amount_usd > %s THEN amount_usd - %s ELSE 0 END
WHERE id = %s
"""
SETTLE_BUDGET = """
UPDATE billing_budget
SET reserved_usd = CASE WHEN reserved_usd > %s THEN reserved_usd - %s ELSE 0 END, spent_usd = spent_usd + %s
WHERE id = %s AND period_start = %s
"""


# ---------------------------------------------------------------------------- handing back


def allowances_release(allowances: QuerySet) -> None:
    """Delete these allowances and release what they still held from their budgets (this month's only)."""
    with transaction.atomic():
        budget_ids = set(allowances.values_list("budget_id", flat=True))
        if not budget_ids:
            return
        _budgets_locked(budget_ids)
        held = list(allowances.select_for_update().values_list("id", "budget_id", "period_start", "amount_usd"))
        BudgetAllowance.objects.filter(id__in=[allowance_id for allowance_id, *_ in held]).delete()
        released: dict[tuple[int, date], Decimal] = {}
        for _, budget_id, period, amount in held:
            released[budget_id, period] = released.get((budget_id, period), Decimal(0)) + amount
        for (budget_id, period), amount in sorted(released.items()):
            Budget.objects.filter(id=budget_id, period_start=period).update(
                reserved_usd=Greatest(F("reserved_usd") - amount, Decimal(0))
            )


def allowances_renew(allowance_ids: list[str]) -> set[str]:
    """Push back the expiry of these allowances; returns those that still exist."""
    expires_at = timezone.now() + timedelta(seconds=ALLOWANCE_TTL_S)
    with transaction.atomic():
        existing = BudgetAllowance.objects.select_for_update().filter(id__in=allowance_ids)
        ids = [str(allowance_id) for allowance_id in existing.values_list("id", flat=True)]
        BudgetAllowance.objects.filter(id__in=ids).update(expires_at=expires_at)
    return set(ids)


def _usd(value: Decimal) -> str:
    """Dollars as billing.money writes them, without the "$" the message puts first: 5.00, 4.99 (of 4.999)."""
    return usd_figure(value)
