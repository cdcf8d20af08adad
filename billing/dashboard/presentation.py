"""How the dashboard draws figures: a budget's bar (widths and colour state), a tile's count and its
change from the previous period.

Kept apart from the data classes: the page and the JSON document show the same `BudgetBar`.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_DOWN, Decimal

from ..money import usd_text
from .aggregates import Totals
from .budgets import BudgetUse


@dataclass(frozen=True, slots=True)
class BudgetBar:
    """A budget's bar: `used_pct` of the limit spent (past 100 when over), the bar's `bar_pct` and
    `reserved_pct` widths (together at most 100) and its colour `state` ("over", "soft" or "ok")."""

    use: BudgetUse
    used_pct: float
    bar_pct: float
    reserved_pct: float
    state: str


def budget_bar(*, use: BudgetUse) -> BudgetBar:
    """The bar of `use`: over at or past the limit, soft past the soft threshold, else ok."""
    if use.limit_usd:
        used_pct = round(float(use.spent_usd / use.limit_usd * 100), 2)
    else:
        used_pct = 100.0 if use.spent_usd else 0.0
    bar_pct = min(used_pct, 100.0)
    reserved_pct = 0.0
    if use.limit_usd:
        reserved_pct = round(min(float(use.reserved_usd / use.limit_usd * 100), 100.0 - bar_pct), 2)
    if use.limit_usd and use.spent_usd >= use.limit_usd:
        state = "over"
    elif use.soft_threshold_pct and used_pct >= use.soft_threshold_pct:
        state = "soft"
    else:
        state = "ok"
    return BudgetBar(use=use, used_pct=used_pct, bar_pct=bar_pct, reserved_pct=reserved_pct, state=state)


def compact_count(n: int) -> str:
    """A count for a tile: 9,999 as is, then three significant digits: 12.3K, 4.56M, 7.89B."""
    if n < 10_000:
        return f"{n:,}"
    size, suffix = next((s, x) for s, x in ((10**3, "K"), (10**6, "M"), (10**9, "B")) if n / s < 999.5 or x == "B")
    value = n / size
    decimals = 2 if value < 9.995 else 1 if value < 99.95 else 0
    return f"{value:.{decimals}f}{suffix}"


@dataclass(frozen=True, slots=True)
class Change:
    """A total against the previous period's: `text` ("+12.5%", "−3.0%", "new", "no change") and
    `direction` ("up", "down" or "same"); `previous_text` is the earlier figure as shown."""

    text: str
    direction: str
    previous_text: str


def change_from(*, now: Decimal | int, before: Decimal | int, previous_text: str) -> Change:
    """How `now` compares with `before`, in percent of `before` to one decimal (cut toward zero)."""
    if now == before:
        return Change("no change", "same", previous_text)
    if not before:
        return Change("new", "up", previous_text)
    percent = (Decimal(now) - Decimal(before)) * 100 / Decimal(before)
    shown = abs(percent).quantize(Decimal("0.1"), rounding=ROUND_DOWN)
    direction = "up" if now > before else "down"
    return Change(f"{'+' if direction == 'up' else '−'}{shown}%", direction, previous_text)


def kpi_changes(*, totals: Totals, previous: Totals) -> dict[str, Change]:
    """The spend, calls and tokens (in + out) tiles' changes from the `previous` period's totals."""
    tokens = totals.prompt_tokens + totals.completion_tokens
    previous_tokens = previous.prompt_tokens + previous.completion_tokens
    return {
        "spend": change_from(now=totals.cost_usd, before=previous.cost_usd, previous_text=usd_text(previous.cost_usd)),
        "calls": change_from(now=totals.calls, before=previous.calls, previous_text=f"{previous.calls:,}"),
        "tokens": change_from(now=tokens, before=previous_tokens, previous_text=compact_count(previous_tokens)),
    }
