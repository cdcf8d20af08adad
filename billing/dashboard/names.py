"""Names for the ids the aggregates carry, and the names the filter form offers a viewer."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser

from routing.models import ApiKey, ModelEndpoint, Route

from .access import viewer_sees_everyone


def model_names(*, ids: Iterable[int]) -> dict[int, str]:
    """Each model id's name; a deleted model's says so."""
    ids = set(ids)
    names = dict(ModelEndpoint.objects.filter(pk__in=ids).values_list("pk", "name"))
    return {i: names.get(i, f"deleted model #{i}") for i in ids}


def user_names(*, ids: Iterable[int]) -> dict[int, str]:
    """Each user id's username; 0 is "no user", a deleted user's says so."""
    ids = set(ids)
    User = get_user_model()
    names = dict(User.objects.filter(pk__in=ids).values_list("pk", User.USERNAME_FIELD))
    return {i: names.get(i, "no user" if i == 0 else f"deleted user #{i}") for i in ids}


def key_names(*, ids: Iterable[int], with_owner: bool) -> dict[int, str]:
    """Each API key id's label ("prod (rw-AbC…)", with its owner's name first when `with_owner`);
    0 is the playground (calls without a key), a deleted key's says so."""
    ids = set(ids)
    keys = {k.pk: k for k in ApiKey.objects.filter(pk__in=ids).select_related("user")}
    return {
        i: _key_label(keys[i], with_owner=with_owner)
        if i in keys
        else "no key (playground)"
        if i == 0
        else f"deleted key #{i}"
        for i in ids
    }


@dataclass(frozen=True, slots=True)
class FilterChoices:
    """What the filter form offers `viewer`: every model and route, and the users and keys they may see."""

    models: list[tuple[str, str]]
    routes: list[str]
    users: list[str] = field(default_factory=list)
    keys: list[tuple[int, str]] = field(default_factory=list)


def filter_choices(*, viewer: AbstractBaseUser, user_id: int | None = None) -> FilterChoices:
    models = [(name, name) for name in ModelEndpoint.objects.order_by("name").values_list("name", flat=True)]
    routes = list(Route.objects.order_by("name").values_list("name", flat=True))
    users: list[str] = []
    keys = ApiKey.objects.select_related("user").order_by("user__username", "name", "id")
    everyone = viewer_sees_everyone(viewer)
    if everyone:
        User = get_user_model()
        users = list(User.objects.order_by(User.USERNAME_FIELD).values_list(User.USERNAME_FIELD, flat=True))
        if user_id is not None:
            keys = keys.filter(user_id=user_id)
    else:
        keys = keys.filter(user_id=viewer.pk)
    key_choices = [(k.pk, _key_label(k, with_owner=everyone and user_id is None)) for k in keys]
    return FilterChoices(models=models, routes=routes, users=users, keys=key_choices)


def _key_label(key: ApiKey, *, with_owner: bool) -> str:
    label = f"{key.name} ({key.prefix}…)"
    return f"{key.user.get_username()}: {label}" if with_owner else label
