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

from django.db import transaction
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
    """Reserve `amount` on every budget, or on none: raises BudgetExceeded naming the first that refuses."""
    period = period_start_for(at)
    with transaction.atomic():
        for budget_id in budget_ids:
            # A new month starts the running totals from zero.
            Budget.objects.filter(id=budget_id).exclude(period_start=period).update(
                period_start=period, spent_usd=0, reserved_usd=0
            )
            reserved = (
                Budget.objects.filter(id=budget_id, period_start=period)
                .filter(limit_usd__gte=F("spent_usd") + F("reserved_usd") + amount)
                .update(reserved_usd=F("reserved_usd") + amount)
            )
            if not reserved:
                raise BudgetExceeded(Budget.objects.select_related("user", "api_key").get(id=budget_id), amount)
    return [Reservation(budget_id, amount, period) for budget_id in budget_ids]


def budgets_settle(reservations: Iterable[Reservation], cost: Decimal | None) -> None:
    """Replace each reservation by the real cost (an unknown cost counts as zero). Call inside a transaction."""
    for reservation in reservations:
        Budget.objects.filter(id=reservation.budget_id, period_start=reservation.period_start).update(
            reserved_usd=Greatest(F("reserved_usd") - reservation.amount, Decimal(0)),
            spent_usd=F("spent_usd") + (cost or Decimal(0)),
        )


def _usd(value: Decimal) -> str:
    """Dollars with at least 2 and at most 6 decimals, never rounded up past a limit: 5.00, 4.9999, 0.000125."""
    whole, _, fraction = f"{value:.6f}".rstrip("0").partition(".")
    return f"{whole}.{fraction.ljust(2, '0')}"
