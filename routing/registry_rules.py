"""Rules a route must follow that no single row can check: the admin's route form and the registry
file's import (routing/registry_file.py) both apply them, with the same messages.

The rules of one row (a provider's base URL, a name's case, a weight's range) are the models' own
validators and `clean()` methods, which both run through `full_clean`.
"""

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
