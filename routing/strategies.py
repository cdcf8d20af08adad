"""Route strategies: how a route orders its targets for one call, one small function per strategy.

`STRATEGIES` maps a `Route.strategy` value to its function; adding a strategy is a function here,
an entry in the table and a choice on the model.
"""

import random
from collections.abc import Callable

from .snapshot import ModelSnap, RouteSnap

Strategy = Callable[[RouteSnap, random.Random], list[ModelSnap]]


def ordered(route: RouteSnap, rng: random.Random) -> list[ModelSnap]:
    """The targets as listed."""
    return [model for model, _ in route.targets]


def weighted(route: RouteSnap, rng: random.Random) -> list[ModelSnap]:
    """The first target drawn by weight, the others following in order (targets of weight 0 are never
    drawn first; if every weight is 0, the order is as listed)."""
    models = ordered(route, rng)
    weights = [weight for _, weight in route.targets]
    if len(models) > 1 and any(weights):
        first = rng.choices(range(len(models)), weights=weights)[0]
        models.insert(0, models.pop(first))
    return models


STRATEGIES: dict[str, Strategy] = {"ordered": ordered, "weighted": weighted}


def route_order(route: RouteSnap, rng: random.Random) -> list[ModelSnap]:
    """The order in which `route`'s targets are tried for one call."""
    return STRATEGIES[route.strategy](route, rng)
