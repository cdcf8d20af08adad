"""What the dashboard shows besides the recent calls, read once per request, and the JSON document of it.

The page renders the summary's totals and budgets and embeds `dashboard_document(summary=...)`, the
very document `/dashboard/data.json` answers: one set of aggregation queries per page view, the same
numbers. The document is documented in the README (money as exact decimal strings).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..models import HISTOGRAM_BOUNDS_MS
from ..money import usd_json
from .access import CallFilters
from .aggregates import (
    KeySpend,
    RequestedStats,
    SpendSeries,
    Totals,
    UserSpend,
    call_slices,
    call_totals,
    key_spend,
    rate,
    requested_stats,
    spend_series,
    user_spend,
)
from .budgets import BudgetUse, budget_uses
from .model_stats import ModelStats, model_stats
from .names import key_names, model_names, user_names
from .presentation import budget_bar
from .votes import VoteResult, vote_results


@dataclass(frozen=True, slots=True)
class DashboardSummary:
    """What the dashboard shows besides the recent calls, read once per request."""

    filters: CallFilters
    totals: Totals
    previous: Totals  # the same filters over the period of the same length just before
    requested: list[RequestedStats]
    series: SpendSeries
    models: list[ModelStats]
    votes: list[VoteResult]
    users: list[UserSpend] | None  # only for a viewer of everyone's spend
    keys: list[KeySpend]
    budgets: list[BudgetUse]
    budget_count: int
    model_names: dict[int, str]
    user_names: dict[int, str]
    key_names: dict[int, str]


def dashboard_summary(*, filters: CallFilters, all_users: bool) -> DashboardSummary:
    """Every aggregate of the dashboard, in a fixed number of queries whatever the number of calls;
    the spend by user only with `all_users` (a viewer of everyone's spend)."""
    slices = call_slices(filters=filters)
    series = spend_series(filters=filters)
    models = model_stats(filters=filters)
    votes = vote_results(filters=filters)
    users = user_spend(slices=slices) if all_users else None
    keys = key_spend(slices=slices)
    budgets, budget_count = budget_uses(filters=filters)
    return DashboardSummary(
        filters=filters,
        totals=call_totals(slices=slices),
        previous=call_totals(slices=call_slices(filters=filters.previous())),
        requested=requested_stats(slices=slices),
        series=series,
        models=models,
        votes=votes,
        users=users,
        keys=keys,
        budgets=budgets,
        budget_count=budget_count,
        model_names=model_names(ids=[*series.by_model, *(m.model_id for m in models), *(v.model_id for v in votes)]),
        user_names={} if users is None else user_names(ids=(u.user_id for u in users if not u.others)),
        key_names=key_names(ids=(k.api_key_id for k in keys if not k.others), with_owner=all_users),
    )


def dashboard_data(*, filters: CallFilters, all_users: bool) -> dict[str, Any]:
    """The `/dashboard/data.json` document of `filters` (see `dashboard_document`)."""
    return dashboard_document(summary=dashboard_summary(filters=filters, all_users=all_users))


def dashboard_document(*, summary: DashboardSummary) -> dict[str, Any]:
    """Everything the dashboard charts show, JSON-ready (money as exact decimal strings).

    This is the documented `/dashboard/data.json` document, also embedded in the page;
    `spend_by_user` is present only for a viewer of everyone's spend.
    """
    filters, totals, series, names = summary.filters, summary.totals, summary.series, summary.model_names
    data: dict[str, Any] = {
        "range": {
            "start": filters.start.isoformat(),
            "end": filters.end.isoformat(),
            "bucket": filters.bucket,
            "tz": filters.tz,
            "kind": filters.kind,
        },
        "totals": {
            "spend_usd": usd_json(totals.cost_usd),
            "calls": totals.calls,
            "prompt_tokens": totals.prompt_tokens,
            "cached_tokens": totals.cached_tokens,
            "cache_write_tokens": totals.cache_write_tokens,
            "completion_tokens": totals.completion_tokens,
            "error_calls": totals.error_calls,
            "error_rate": totals.error_rate,
            "fallback_calls": totals.fallback_calls,
            "fallback_rate": totals.fallback_rate,
            "rejected_calls": totals.rejected_calls,
            "cache_hit_calls": totals.cache_hit_calls,
            "cache_hit_rate": totals.cache_hit_rate,
            "saved_usd": usd_json(totals.saved_usd),
            "unpriced_calls": totals.unpriced_calls,
            "estimated_calls": totals.estimated_calls,
            "by_kind": {
                k.kind: {
                    "spend_usd": usd_json(k.cost_usd),
                    "calls": k.calls,
                    "prompt_tokens": k.prompt_tokens,
                    "completion_tokens": k.completion_tokens,
                }
                for k in totals.by_kind
            },
        },
        "previous_totals": {
            "start": filters.previous().start.isoformat(),
            "spend_usd": usd_json(summary.previous.cost_usd),
            "calls": summary.previous.calls,
            "prompt_tokens": summary.previous.prompt_tokens,
            "completion_tokens": summary.previous.completion_tokens,
        },
        "spend_over_time": {
            "bucket": series.bucket,
            "starts": [start.isoformat() for start in series.starts],
            "series": [
                {"model": names[model_id], "spend_usd": [usd_json(v) for v in values]}
                for model_id, values in series.by_model.items()
            ],
        },
        "traffic_over_time": {
            "bucket": series.bucket,
            "starts": [start.isoformat() for start in series.starts],
            "calls": series.calls,
            "prompt_tokens": series.prompt_tokens,
            "completion_tokens": series.completion_tokens,
        },
        "spend_by_key": [
            {
                "key": f"{k.others} other keys" if k.others else summary.key_names[k.api_key_id],
                "calls": k.calls,
                "spend_usd": usd_json(k.cost_usd),
            }
            for k in summary.keys
        ],
        "models": [
            {
                "model": names[m.model_id],
                "calls": m.calls,
                "spend_usd": usd_json(m.cost_usd),
                "prompt_tokens": m.prompt_tokens,
                "completion_tokens": m.completion_tokens,
                "error_calls": m.error_calls,
                "error_rate": rate(m.error_calls, m.calls),
                "fallback_calls": m.fallback_calls,
                "fallback_rate": rate(m.fallback_calls, m.calls),
                "latency_p50_ms": m.latency_p50_ms,
                "latency_p95_ms": m.latency_p95_ms,
                "ttft_p50_ms": m.ttft_p50_ms,
                "ttft_calls": m.ttft_calls,
            }
            for m in summary.models
        ],
        "requested": [
            {
                "requested": r.requested,
                "calls": r.calls,
                "error_calls": r.error_calls,
                "error_rate": r.error_rate,
                "fallback_calls": r.fallback_calls,
                "fallback_rate": r.fallback_rate,
            }
            for r in summary.requested
        ],
        "votes": [
            {"model": names[v.model_id], "wins": v.wins, "comparisons": v.comparisons, "win_rate": v.win_rate}
            for v in summary.votes
        ],
        "budgets": [_budget_entry(use) for use in summary.budgets],
        "budgets_total": summary.budget_count,
        "histogram_bounds_ms": list(HISTOGRAM_BOUNDS_MS),
    }
    if summary.users is not None:
        data["spend_by_user"] = [
            {
                "user": f"{u.others} other users" if u.others else summary.user_names[u.user_id],
                "calls": u.calls,
                "spend_usd": usd_json(u.cost_usd),
            }
            for u in summary.users
        ]
    return data


def _budget_entry(use: BudgetUse) -> dict[str, Any]:
    bar = budget_bar(use=use)
    return {
        "label": use.label,
        "limit_usd": usd_json(use.limit_usd),
        "spent_usd": usd_json(use.spent_usd),
        "reserved_usd": usd_json(use.reserved_usd),
        "soft_threshold_pct": use.soft_threshold_pct,
        "used_pct": bar.used_pct,
        "state": bar.state,
    }
