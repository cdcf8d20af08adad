"""Playground compare-mode votes per chosen model, for the dashboard's votes chart."""

from __future__ import annotations

from django.db.models import Count

from routing.models import PreferenceVote

from .access import CallFilters


def vote_counts(*, filters: CallFilters) -> dict[int, int]:
    """Playground compare-mode votes per chosen model: votes cast in the range by the filtered user(s).

    Votes belong to a user, not to an API key or a route, so only the user and model filters apply.
    """
    votes = PreferenceVote.objects.filter(
        created_at__gte=filters.start, created_at__lt=filters.end, chosen_model__isnull=False
    )
    if filters.user_id is not None:
        votes = votes.filter(user_id=filters.user_id)
    if filters.model_id is not None:
        votes = votes.filter(chosen_model_id=filters.model_id)
    rows = votes.order_by().values("chosen_model_id").annotate(n=Count("id"))
    return dict(sorted(((r["chosen_model_id"], r["n"]) for r in rows), key=lambda item: (-item[1], item[0])))
