"""`{% load call_extras %}`: the call page's price provenance block and its replay actions.

`{% price_provenance call %}` shows which price produced the call's cost (billing/price_provenance.py);
`{% replay_actions call stored=... %}` gives "Open in playground" and "Replay on…" when the call's
conversation is stored (the playground loads it through `/playground/api/stored/<id>`).
"""

from typing import Any

from django import template

from routing.models import ModelEndpoint, Route

from ..price_provenance import price_provenance_of, price_provenance_text

register = template.Library()


@register.inclusion_tag("billing/_price_provenance.html")
def price_provenance(call: Any) -> dict[str, Any]:
    """The block's context: the provenance (None without a price), its rates as exact dollar figures
    ("2.50", "0.075"; the cached one None when cached tokens cost the input rate) and the line."""
    provenance = price_provenance_of(call)
    rates = provenance.as_json() if provenance is not None else None
    return {"provenance": provenance, "rates": rates, "text": price_provenance_text(call)}


@register.inclusion_tag("billing/_replay_actions.html")
def replay_actions(call: Any, *, stored: Any) -> dict[str, Any]:
    """The actions of a chat call whose conversation is `stored`; the replay targets are every route and
    chat model but the one the call asked for (the playground marks which can answer now). An embeddings
    call has none: the playground is a chat page."""
    embeddings = ModelEndpoint.Kind.EMBEDDINGS
    routes = Route.objects.exclude(targets__model__kind=embeddings).exclude(name=call.requested)
    models = ModelEndpoint.objects.exclude(kind=embeddings).exclude(name=call.requested)
    return {
        "call": call,
        "embeddings": call.kind == embeddings,
        "stored": bool(stored) and call.kind != embeddings,
        "routes": list(routes.order_by("name").values_list("name", flat=True)),
        "models": list(models.order_by("name").values_list("name", flat=True)),
    }
