"""Writes on prices: the price in force, and a new price row (rows are never rewritten)."""

from datetime import datetime
from decimal import Decimal

from django.core.exceptions import ValidationError
from django.utils import timezone

from routing.models import ModelEndpoint

from .models import Price


def price_current(*, model: ModelEndpoint, at: datetime | None = None) -> Price | None:
    """The price in force for `model` at `at` (now by default), or None when the model has none."""
    at = at or timezone.now()
    return model.prices.filter(effective_from__lte=at).order_by("-effective_from").first()


def price_set(
    *,
    model: ModelEndpoint,
    input_per_mtok: Decimal,
    output_per_mtok: Decimal,
    cached_input_per_mtok: Decimal | None = None,
    cache_write_per_mtok: Decimal | None = None,
    source: str = Price.Source.MANUAL,
    effective_from: datetime | None = None,
) -> Price:
    """Add a price row for `model` from `effective_from` (now by default); older rows stay as history."""
    price = Price(
        model=model,
        input_per_mtok=input_per_mtok,
        output_per_mtok=output_per_mtok,
        cached_input_per_mtok=cached_input_per_mtok,
        cache_write_per_mtok=cache_write_per_mtok,
        source=source,
        effective_from=effective_from or timezone.now(),
    )
    try:
        price.full_clean(exclude=["model"])
    except ValidationError as exc:
        raise ValidationError({f"price.{k}": v for k, v in exc.message_dict.items()}) from None
    price.save()
    return price
