"""What would it have cost? The filtered range's stored token counts re-priced at another model's prices.

Per model that answered (the current model), the priced calls' prompt, cached, cache-write and
completion tokens
are summed from the rollups and priced at the chosen model's price in force now, with the same
formula as a call's cost (billing/pricing.py); the cost now is what those calls were charged. Both
sides count the same calls:

- unpriced calls (no cost now) are left out of both, and counted in a note;
- cache hits are left out (they cost nothing now, and would cost nothing on the chosen model);
- calls no model answered have no tokens;
- calls of the other kind are left out: an embeddings call is re-priced only at an embeddings model's
  price, a chat call at a chat model's;
- calls whose tokens are estimates are re-priced like the others, and counted in a note (all the
  estimated calls of the models shown, cache hits aside).

No call is made and no raw call row is read: one rollup scan, as the dashboard's totals. Pricing a
sum of tokens is exact (Decimal) and equals the sum of pricing each call, the formula being linear.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.db.models import Sum

from routing.models import ModelEndpoint

from ..models import Call, Price
from ..money import usd_json
from ..pricing import cost_for_usage
from ..rollups import SCALAR_COUNTERS
from .access import CallFilters, rollups_matching
from .aggregates import usd_from_pusd
from .names import model_names

_SUMS = tuple(counter for counter in SCALAR_COUNTERS if counter not in ("fallback_calls", "saved_pusd"))


@dataclass(frozen=True, slots=True)
class WhatIfLine:
    """The priced calls one model answered: their tokens, what they cost, what they would have cost."""

    model_id: int
    calls: int  # priced calls, re-priced
    estimated_calls: int  # the model's calls with estimated tokens (priced or not: the rollups do not split them)
    unpriced_calls: int  # left out
    prompt_tokens: int
    cached_tokens: int
    cache_write_tokens: int
    completion_tokens: int
    cost_now_usd: Decimal
    cost_chosen_usd: Decimal

    @property
    def difference_usd(self) -> Decimal:
        """What the chosen model would have cost more (negative: less)."""
        return self.cost_chosen_usd - self.cost_now_usd


@dataclass(frozen=True, slots=True)
class WhatIf:
    chosen: ModelEndpoint
    price: Price  # the chosen model's price in force now
    lines: list[WhatIfLine]  # by cost now, highest first

    @property
    def cost_now_usd(self) -> Decimal:
        return sum((line.cost_now_usd for line in self.lines), Decimal(0))

    @property
    def cost_chosen_usd(self) -> Decimal:
        return sum((line.cost_chosen_usd for line in self.lines), Decimal(0))

    @property
    def difference_usd(self) -> Decimal:
        return self.cost_chosen_usd - self.cost_now_usd

    @property
    def calls(self) -> int:
        return sum(line.calls for line in self.lines)

    @property
    def estimated_calls(self) -> int:
        return sum(line.estimated_calls for line in self.lines)

    @property
    def unpriced_calls(self) -> int:
        return sum(line.unpriced_calls for line in self.lines)


def what_if(*, filters: CallFilters, chosen: ModelEndpoint, price: Price) -> WhatIf:
    """The calls `filters` select, re-priced at `price` (the chosen model's), per current model."""
    rows = (
        rollups_matching(filters=filters, period=filters.totals_period)
        .exclude(model_id=0)
        .exclude(status=Call.Status.CACHE_HIT)
        .filter(kind=chosen.kind)
        .values("model_id")
        .annotate(**{f"n_{name}": Sum(name) for name in _SUMS})
    )
    lines = []
    for row in rows:
        n = {name: int(row[f"n_{name}"] or 0) for name in _SUMS}
        prompt = n["prompt_tokens"] - n["unpriced_prompt_tokens"]
        cached = n["cached_tokens"] - n["unpriced_cached_tokens"]
        written = n["cache_write_tokens"] - n["unpriced_cache_write_tokens"]
        completion = n["completion_tokens"] - n["unpriced_completion_tokens"]
        lines.append(
            WhatIfLine(
                model_id=row["model_id"],
                calls=n["calls"] - n["unpriced_calls"],
                estimated_calls=n["estimated_calls"],
                unpriced_calls=n["unpriced_calls"],
                prompt_tokens=prompt,
                cached_tokens=cached,
                cache_write_tokens=written,
                completion_tokens=completion,
                cost_now_usd=usd_from_pusd(n["cost_pusd"]),
                cost_chosen_usd=cost_for_usage(
                    price,
                    prompt_tokens=prompt,
                    cached_tokens=cached,
                    cache_write_tokens=written,
                    completion_tokens=completion,
                ),
            )
        )
    lines.sort(key=lambda line: (-line.cost_now_usd, -line.calls, line.model_id))
    return WhatIf(chosen=chosen, price=price, lines=lines)


def what_if_document(result: WhatIf) -> dict[str, Any]:
    """The `/dashboard/whatif.json` document (money as exact decimal strings)."""
    names = model_names(ids=(line.model_id for line in result.lines))
    price = result.price
    return {
        "model": result.chosen.name,
        "price": {
            "price_id": price.id,
            "input_per_mtok": usd_json(price.input_per_mtok),
            "cached_input_per_mtok": None
            if price.cached_input_per_mtok is None
            else usd_json(price.cached_input_per_mtok),
            "cache_write_per_mtok": None
            if price.cache_write_per_mtok is None
            else usd_json(price.cache_write_per_mtok),
            "output_per_mtok": usd_json(price.output_per_mtok),
            "effective_from": price.effective_from.isoformat(),
        },
        "by_model": [
            {
                "model": names[line.model_id],
                "calls": line.calls,
                "estimated_calls": line.estimated_calls,
                "unpriced_calls": line.unpriced_calls,
                "prompt_tokens": line.prompt_tokens,
                "cached_tokens": line.cached_tokens,
                "cache_write_tokens": line.cache_write_tokens,
                "completion_tokens": line.completion_tokens,
                "cost_now_usd": usd_json(line.cost_now_usd),
                "cost_chosen_usd": usd_json(line.cost_chosen_usd),
                "difference_usd": usd_json(line.difference_usd),
            }
            for line in result.lines
        ],
        "total": {
            "calls": result.calls,
            "cost_now_usd": usd_json(result.cost_now_usd),
            "cost_chosen_usd": usd_json(result.cost_chosen_usd),
            "difference_usd": usd_json(result.difference_usd),
        },
        "estimated_calls": result.estimated_calls,
        "unpriced_calls": result.unpriced_calls,
    }
