"""Budgets: reserve a call's worst case before it runs, settle with its real cost after.

Reserving is a conditional update (`reserved += x WHERE spent + reserved + x <= limit`) under the
budget rows' locks, so concurrent calls on any number of workers can never reserve past a limit
together: each re-checks the condition against the committed row. All the budgets of one call are
reserved atomically: if any refuses, none keeps a reservation. On PostgreSQL that is one statement
sent from the event loop; on SQLite one UPDATE per budget in a transaction (SQLite has one writer).

Settling happens with the call row's insert (billing/recorder.py), in the same transaction, so a
reservation is released exactly once, whatever the call's outcome (answer, error, timeout or a
client that went away). A spent reservation is replaced by the real cost; until then the worst
case stays counted, which errs on the safe side.
"""

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from functools import cache

import psycopg
from django.db import DatabaseError, connection, connections, transaction
from django.db.models import F
from django.db.models.functions import Greatest

from routerweb.db_executor import db_executor
from routerweb.pg_async import pg_pool
from routing.registry import ModelSnap

from .models import Budget
from .pricing import cost_for_usage

# Output cap assumed for the worst case when neither the request nor the model sets one.
DEFAULT_MAX_OUTPUT_TOKENS = 4096


@dataclass(frozen=True, slots=True)
class Reservation:
    budget_id: int
    amount: Decimal
    period_start: date

    def as_list(self) -> list:
        return [self.budget_id, str(self.amount), self.period_start.isoformat()]

    @classmethod
    def from_list(cls, value: list) -> "Reservation":
        return cls(int(value[0]), Decimal(value[1]), date.fromisoformat(value[2]))


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
    return at.date().replace(day=1)


def worst_case_cost(
    candidates: Iterable[ModelSnap], *, prompt_tokens: int, max_tokens: int | None, at: datetime
) -> Decimal:
    """The most this call can cost: the dearest candidate, with every allowed output token used.

    A candidate without a price adds nothing: its calls are recorded as unpriced, not guessed.
    """
    worst = Decimal(0)
    for model in candidates:
        price = model.price_at(at)
        if price is None:
            continue
        output = max_tokens or model.max_output_tokens or DEFAULT_MAX_OUTPUT_TOKENS
        cost = cost_for_usage(price, prompt_tokens=prompt_tokens, cached_tokens=0, completion_tokens=output)
        worst = max(worst, cost)
    return worst


async def budgets_reserve(*, budget_ids: list[int], amount: Decimal, at: datetime) -> list[Reservation]:
    """Reserve `amount` on every budget, or on none: raises BudgetExceeded naming the first that refuses.

    On PostgreSQL one statement from the event loop (routerweb/pg_async.py); elsewhere (SQLite) a
    transaction in a database thread.
    """
    ids = sorted(set(budget_ids))
    period = period_start_for(at)
    try:
        if _on_postgresql():
            refused = await _reserve_postgresql(ids, period, amount)
        else:
            refused = await db_executor.run(_reserve_in_transaction, ids, period, amount)
        if refused is not None:
            budget = await db_executor.run(_refusing_budget, refused, period)
    except (DatabaseError, psycopg.Error) as exc:
        raise BudgetsUnavailable(str(exc)) from exc
    if refused is not None:
        raise BudgetExceeded(budget, amount)
    return [Reservation(budget_id, amount, period) for budget_id in ids]


# Locks the budgets in id order (so that concurrent calls never deadlock) and reads each as it is
# after any concurrent change (READ COMMITTED re-reads a row it waited for); a budget still in an
# older month counts as empty. Reserves on all of them only if none refuses.
RESERVE_ALL_POSTGRESQL = """
WITH budgets AS (
    SELECT id, limit_usd,
        CASE WHEN period_start = %(period)s THEN spent_usd ELSE 0 END AS spent,
        CASE WHEN period_start = %(period)s THEN reserved_usd ELSE 0 END AS reserved
    FROM billing_budget WHERE id = ANY(%(ids)s::bigint[]) ORDER BY id FOR UPDATE
), refused AS (
    SELECT min(id) AS id FROM budgets WHERE spent + reserved + %(amount)s > limit_usd
), reserved AS (
    UPDATE billing_budget AS budget
    SET spent_usd = budgets.spent, reserved_usd = budgets.reserved + %(amount)s, period_start = %(period)s
    FROM budgets, refused
    WHERE budget.id = budgets.id AND refused.id IS NULL
    RETURNING budget.id
)
SELECT (SELECT id FROM refused), (SELECT count(*) FROM reserved)
"""


@cache
def _on_postgresql() -> bool:
    return connections["default"].vendor == "postgresql"  # looked up once: it costs a thread-local access


async def _reserve_postgresql(ids: list[int], period: date, amount: Decimal) -> int | None:
    """The id of the first budget that refuses, or None when all of them took the reservation."""
    async with (await pg_pool()).connection() as conn:
        # The ids as an array literal: psycopg's list adaptation costs more than the whole statement's parameters.
        params = {"ids": "{" + ",".join(map(str, ids)) + "}", "period": period, "amount": amount}
        cursor = await conn.execute(RESERVE_ALL_POSTGRESQL, params)
        refused, _ = await cursor.fetchone()
    return refused


# One budget, on any database: the SET expressions read the row as it was, as SQL defines for UPDATE.
# Hand-written because building it with the ORM costs over a millisecond of CPU per call.
RESERVE_ONE = """
UPDATE billing_budget SET
    spent_usd = CASE WHEN period_start = %s THEN spent_usd ELSE 0 END,
    reserved_usd = CASE WHEN period_start = %s THEN reserved_usd ELSE 0 END + %s,
    period_start = %s
WHERE id = %s AND limit_usd >= CASE WHEN period_start = %s THEN spent_usd + reserved_usd ELSE 0 END + %s
"""


def _reserve_in_transaction(ids: list[int], period: date, amount: Decimal) -> int | None:
    """One conditional UPDATE per budget in a transaction, rolled back when one refuses (its id is returned)."""
    day = connection.ops.adapt_datefield_value(period)
    value = connection.ops.adapt_decimalfield_value(amount)
    with transaction.atomic(), connection.cursor() as cursor:
        for budget_id in ids:
            cursor.execute(RESERVE_ONE, [day, day, value, day, budget_id, day, value])
            if cursor.rowcount != 1:
                transaction.set_rollback(True)
                return budget_id
    return None


def _refusing_budget(budget_id: int, period: date) -> Budget:
    budget = Budget.objects.select_related("user", "api_key").get(id=budget_id)
    if budget.period_start != period:
        budget.spent_usd = budget.reserved_usd = Decimal(0)
    return budget


def budgets_settle(settlements: Iterable[tuple[Reservation, Decimal | None]]) -> None:
    """Replace reservations by real costs (an unknown cost counts as zero). Call inside a transaction.

    The settlements of a batch of calls are summed per budget first: one UPDATE per budget.
    """
    totals: dict[tuple[int, date], list[Decimal]] = {}
    for reservation, cost in settlements:
        total = totals.setdefault((reservation.budget_id, reservation.period_start), [Decimal(0), Decimal(0)])
        total[0] += reservation.amount
        total[1] += cost or Decimal(0)
    for (budget_id, period), (released, spent) in sorted(totals.items()):
        Budget.objects.filter(id=budget_id, period_start=period).update(
            reserved_usd=Greatest(F("reserved_usd") - released, Decimal(0)),
            spent_usd=F("spent_usd") + spent,
        )


def _usd(value: Decimal) -> str:
    """Dollars with at least 2 and at most 6 decimals, never rounded up past a limit: 5.00, 4.9999, 0.000125."""
    whole, _, fraction = f"{value:.6f}".rstrip("0").partition(".")
    return f"{whole}.{fraction.ljust(2, '0')}"
