"""Budgets: reserve a call's worst case before it runs, settle with its real cost after.

Reserving is one conditional UPDATE per budget (`reserved += x WHERE spent + reserved + x <= limit`),
so concurrent calls on any number of workers can never reserve past a limit together: on PostgreSQL
the row lock serialises them and each re-checks the condition against the committed row. All the
budgets of one call are reserved in one transaction: if any refuses, none keeps a reservation.

Settling happens with the call row's insert (billing/recorder.py), in the same transaction, so a
reservation is released exactly once, whatever the call's outcome (answer, error, timeout or a
client that went away). A spent reservation is replaced by the real cost; until then the worst
case stays counted, which errs on the safe side.
"""

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal

from django.db import connection, transaction
from django.db.models import F
from django.db.models.functions import Greatest

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


def budgets_reserve(*, budget_ids: list[int], amount: Decimal, at: datetime) -> list[Reservation]:
    """Reserve `amount` on every budget, or on none: raises BudgetExceeded naming the first that refuses.

    One conditional UPDATE per budget, in id order (so that concurrent calls lock budget rows in the
    same order and never deadlock); a budget still in an older month counts as empty (its totals
    restart from zero). If a budget refuses, the transaction is rolled back: none keeps a reservation.
    """
    period = period_start_for(at)
    refused = None
    with transaction.atomic(), connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(COMMIT_WITHOUT_WAITING_FOR_DISK)
        for budget_id in sorted(set(budget_ids)):
            cursor.execute(RESERVE_SQL, _reserve_params(budget_id, period, amount))
            if cursor.rowcount != 1:
                refused = budget_id
                transaction.set_rollback(True)
                break
    if refused is not None:
        raise BudgetExceeded(_refusing_budget(refused, period), amount)
    return [Reservation(budget_id, amount, period) for budget_id in budget_ids]


# Spent and reserved of the current month (a budget still in an older month counts as empty); the
# SET expressions read the row as it was, as SQL defines for UPDATE. Hand-written because building
# it with the ORM costs over a millisecond of CPU per call, on every budgeted request.
RESERVE_SQL = """
UPDATE billing_budget SET
    spent_usd = CASE WHEN period_start = %s THEN spent_usd ELSE 0 END,
    reserved_usd = CASE WHEN period_start = %s THEN reserved_usd ELSE 0 END + %s,
    period_start = %s
WHERE id = %s AND limit_usd >= CASE WHEN period_start = %s THEN spent_usd + reserved_usd ELSE 0 END + %s
"""

# PostgreSQL: this transaction's commit does not wait for its WAL flush. The budget rows stay
# locked until commit, and waiting for the disk would serialise every call of a user behind it. A
# reservation lost in a database crash only means a call ran unreserved; its cost still settles
# from its call row, which is durable.
COMMIT_WITHOUT_WAITING_FOR_DISK = "SET LOCAL synchronous_commit TO OFF"


def _reserve_params(budget_id: int, period: date, amount: Decimal) -> list:
    day = connection.ops.adapt_datefield_value(period)
    value = connection.ops.adapt_decimalfield_value(amount)
    return [day, day, value, day, budget_id, day, value]


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
