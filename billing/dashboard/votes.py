"""Playground compare-mode votes as win rates per model, for the dashboard's votes chart.

A vote is one comparison of two or more columns; the model that answered the chosen column won it,
the models of the other columns lost it. A model's win rate is its wins over the comparisons it took
part in: raw counts favour the model that was compared most, a rate does not.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from routing.models import ModelEndpoint, PreferenceVote

from ..models import Call
from .access import CallFilters


@dataclass(frozen=True, slots=True)
class VoteResult:
    """How a model fared in the comparisons it took part in."""

    model_id: int
    wins: int
    comparisons: int

    @property
    def win_rate(self) -> float:
        return round(self.wins / self.comparisons, 6) if self.comparisons else 0.0


def vote_results(*, filters: CallFilters) -> list[VoteResult]:
    """Per model, the votes cast in the range by the filtered user(s) that it took part in and won;
    best win rate first (then most comparisons). With a model filter, that model's entry only.

    A column's model is the model that answered its call (`request_ids`, so a route resolves to the
    target that answered), else the model the column names (calls not stored, or generated votes);
    a column that resolves to neither counts for nobody. The chosen column's model is `chosen_model`.
    Votes belong to a user, not to an API key or a route, so only the user and model filters apply.
    Three queries: the votes, the calls of their columns, the models their columns name.
    """
    votes = PreferenceVote.objects.filter(created_at__gte=filters.start, created_at__lt=filters.end)
    if filters.user_id is not None:
        votes = votes.filter(user_id=filters.user_id)
    rows = list(votes.order_by().values_list("chosen_model_id", "compared", "request_ids"))
    request_ids = {r for _, _, ids in rows for r in ids if isinstance(r, str) and r}
    names = {n for _, compared, _ in rows for n in compared if isinstance(n, str)}
    answered = dict(
        Call.objects.filter(request_id__in=request_ids, model__isnull=False).values_list("request_id", "model_id")
    )
    named = dict(ModelEndpoint.objects.filter(name__in=names).values_list("name", "id"))
    wins: dict[int, int] = defaultdict(int)
    comparisons: dict[int, int] = defaultdict(int)
    for chosen, compared, ids in rows:
        models = {chosen} if chosen else set()
        for index, name in enumerate(compared):
            request_id = ids[index] if index < len(ids) else None
            model = answered.get(request_id) or named.get(name)
            if model:
                models.add(model)
        for model in models:
            comparisons[model] += 1
            wins[model] += model == chosen
    results = [VoteResult(model_id=m, wins=wins[m], comparisons=n) for m, n in comparisons.items()]
    if filters.model_id is not None:
        results = [r for r in results if r.model_id == filters.model_id]
    return sorted(results, key=lambda r: (-r.win_rate, -r.comparisons, r.model_id))
