"""Rules a route must follow that no single row can check: the admin's route form and the registry
file's import (routing/registry_file.py) both apply them, with the same messages.

The rules of one row (a provider's base URL, a name's case, a weight's range) are the models' own
validators and `clean()` methods, which both run through `full_clean`.
"""

from collections.abc import Iterable

from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator

WEIGHT_MIN = 1
ROUTE_WITHOUT_TARGETS = "A route needs at least one target: a call to it would have no model to try."


def validate_weight(value: object) -> None:
    """A target's weight: a whole number ≥ 1 (a weighted route draws its first target by weight)."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValidationError(f"The weight must be a whole number ≥ {WEIGHT_MIN}, got {value!r}.")
    MinValueValidator(WEIGHT_MIN, f"The weight must be a whole number ≥ {WEIGHT_MIN}, got {value!r}.")(value)


def route_targets_error(target_count: int) -> str | None:
    """What is wrong with a route of `target_count` targets, or None."""
    return ROUTE_WITHOUT_TARGETS if target_count < 1 else None


def route_kinds_error(targets: Iterable[tuple[str, str]]) -> str | None:
    """What is wrong with a route whose targets are these (model name, kind) pairs, or None: they must
    share one kind (a call to the route goes to one endpoint, chat or embeddings)."""
    first_of_kind: dict[str, str] = {}
    for name, kind in targets:
        first_of_kind.setdefault(kind, name)
    if len(first_of_kind) < 2:
        return None
    described = " and ".join(f"{name!r} is {kind_label(kind)}" for kind, name in first_of_kind.items())
    return f"A route's targets must all be of one kind: {described}."


def kind_label(kind: str) -> str:
    """ "a chat model", "an embeddings model": how messages name a model's kind."""
    return f"{'an' if kind[:1] in 'aeiou' else 'a'} {kind} model"
