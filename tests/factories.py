"""Plain helpers that create registry rows and users for tests, with defaults for everything not given."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser, Group, Permission

from billing.models import Price
from billing.services import price_set
from routing.models import ModelEndpoint, Provider, Route, RouteTarget

_sequence = itertools.count(1)


def _unique(prefix: str) -> str:
    return f"{prefix}-{next(_sequence)}"


def provider_create(
    *,
    name: str | None = None,
    base_url: str = "https://api.example.test/v1",
    api_key_env: str = "",
    **fields: Any,
) -> Provider:
    return Provider.objects.create(
        name=name or _unique("provider"), base_url=base_url, api_key_env=api_key_env, **fields
    )


def model_create(
    *,
    name: str | None = None,
    provider: Provider | None = None,
    price: tuple[Decimal | str | int, Decimal | str | int] | None = None,
    **fields: Any,
) -> ModelEndpoint:
    """A model (and a provider when none is given); `price` = (input, output) per 1M tokens adds a Price row."""
    model = ModelEndpoint.objects.create(
        name=name or _unique("model"), provider=provider or provider_create(), **fields
    )
    if price is not None:
        price_create(model=model, input_per_mtok=price[0], output_per_mtok=price[1])
    return model


def price_create(
    *,
    model: ModelEndpoint,
    input_per_mtok: Decimal | str | int = "1",
    output_per_mtok: Decimal | str | int = "2",
    **fields: Any,
) -> Price:
    return price_set(
        model=model,
        input_per_mtok=Decimal(str(input_per_mtok)),
        output_per_mtok=Decimal(str(output_per_mtok)),
        **fields,
    )


def claude_price_create(model: ModelEndpoint) -> Price:
    """Claude Sonnet's rates per 1M tokens: $3 input, $15 output, $0.30 cache read, $3.75 cache write."""
    return price_create(
        model=model,
        input_per_mtok="3",
        output_per_mtok="15",
        cached_input_per_mtok=Decimal("0.30"),
        cache_write_per_mtok=Decimal("3.75"),
    )


def route_create(
    name: str,
    models: Sequence[ModelEndpoint | str],
    *,
    strategy: str = Route.Strategy.ORDERED,
    weights: Sequence[int] | None = None,
    description: str = "",
) -> Route:
    """A route whose targets are `models` in order (instances or names of existing models), one weight per model."""
    route = Route.objects.create(name=name, strategy=strategy, description=description)
    weights = [1] * len(models) if weights is None else weights
    for position, (model, weight) in enumerate(zip(models, weights, strict=True)):
        if isinstance(model, str):
            model = ModelEndpoint.objects.get(name=model)
        RouteTarget.objects.create(route=route, model=model, position=position, weight=weight)
    return route


def user_create(
    username: str,
    *,
    password: str | None = "test-password-1234",
    is_staff: bool = False,
    is_superuser: bool = False,
    **fields: Any,
) -> AbstractBaseUser:
    return get_user_model().objects.create_user(
        username=username, password=password, is_staff=is_staff, is_superuser=is_superuser, **fields
    )


def spend_viewers_group() -> Group:
    """The group an admin would make for seeing everyone's spend: `billing.view_all_spend`."""
    group, _ = Group.objects.get_or_create(name="spend viewers")
    group.permissions.add(Permission.objects.get(content_type__app_label="billing", codename="view_all_spend"))
    return group
