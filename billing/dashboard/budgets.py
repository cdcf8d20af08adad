"""This month's use of the budgets that apply to the calls the filters select: data only (how a
budget is drawn is `presentation.budget_bar`)."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from django.db.models import Case, DecimalField, F, Q, Value, When
from django.utils import timezone

from routing.models import ApiKey

from ..budgets import period_start_for
from ..models import Budget
from .access import CallFilters

BUDGETS_SHOWN = 7


@dataclass(frozen=True, slots=True)
class BudgetUse:
    """This month's use of a budget: `spent_usd` settled, `reserved_usd` held by calls in flight."""

    label: str
    limit_usd: Decimal
    spent_usd: Decimal
    reserved_usd: Decimal
    soft_threshold_pct: int | None


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
