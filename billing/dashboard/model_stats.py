"""The per-model breakdown of the calls the filters select, read from the rollups: what each model's
calls cost and how fast they were (nearest-rank percentiles of the latency and TTFT histograms)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

from django.db.models import Q, Sum

from ..models import HISTOGRAM_BOUNDS_MS, LATENCY_COLUMNS, TTFT_COLUMNS, Call
from .access import CallFilters, rollups_matching
from .aggregates import usd_from_pusd


@dataclass(frozen=True, slots=True)
class ModelStats:
    """What the calls a model answered cost and how fast they were; percentiles in ms (bucket upper bounds)."""

    model_id: int
    calls: int
    error_calls: int
    fallback_calls: int
    cost_usd: Decimal
    prompt_tokens: int
    completion_tokens: int
    latency_counts: tuple[int, ...]
    ttft_counts: tuple[int, ...]

    @property
    def latency_p50_ms(self) -> int | None:
        return histogram_percentile(self.latency_counts, 50)

    @property
    def latency_p95_ms(self) -> int | None:
        return histogram_percentile(self.latency_counts, 95)

    @property
    def ttft_p50_ms(self) -> int | None:
        return histogram_percentile(self.ttft_counts, 50)

    @property
    def ttft_calls(self) -> int:
        return sum(self.ttft_counts)


def histogram_percentile(counts: Sequence[int], percent: int) -> int | None:
    """The nearest-rank percentile of a histogram: the upper bound (ms) of the bucket holding the
    ceil(n × percent / 100)-th smallest value. None when there is no value, or when that value is in
    the last, unbounded bucket (slower than the largest bound)."""
    total = sum(counts)
    if not total:
        return None
    rank = -(-total * percent // 100)
    seen = 0
    for index, count in enumerate(counts):
        seen += count
        if seen >= rank:
            return HISTOGRAM_BOUNDS_MS[index] if index < len(HISTOGRAM_BOUNDS_MS) else None
    raise AssertionError("unreachable: rank <= total")


def model_stats(*, filters: CallFilters) -> list[ModelStats]:
    """One entry per model that answered calls in the range (calls no model answered are left out), by spend."""
    histograms = {column: Sum(column) for column in LATENCY_COLUMNS + TTFT_COLUMNS}
    rows = (
        rollups_matching(filters=filters, period=filters.totals_period)
        .exclude(model_id=0)
        .values("model_id")
        .annotate(
            n_calls=Sum("calls"),
            n_error_calls=Sum("calls", filter=Q(status=Call.Status.ERROR)),
            n_fallback_calls=Sum("fallback_calls"),
            n_cost_pusd=Sum("cost_pusd"),
            n_prompt_tokens=Sum("prompt_tokens"),
            n_completion_tokens=Sum("completion_tokens"),
            **histograms,
        )
    )
    stats = [
        ModelStats(
            model_id=row["model_id"],
            calls=int(row["n_calls"]),
            error_calls=int(row["n_error_calls"] or 0),
            fallback_calls=int(row["n_fallback_calls"]),
            cost_usd=usd_from_pusd(row["n_cost_pusd"]),
            prompt_tokens=int(row["n_prompt_tokens"]),
            completion_tokens=int(row["n_completion_tokens"]),
            latency_counts=tuple(int(row[c]) for c in LATENCY_COLUMNS),
            ttft_counts=tuple(int(row[c]) for c in TTFT_COLUMNS),
        )
        for row in rows
    ]
    return sorted(stats, key=lambda s: (-s.cost_usd, -s.calls, s.model_id))
