"""Refreshing `Price` rows from the `genai-prices` package's bundled data, offline.

Only the data shipped inside the installed package is read (its auto-update is never started), so
a sync is reproducible and needs no network; upgrading the package is how the table is refreshed.

Rules:
- A registry model is matched by its provider's base URL (genai-prices knows each provider's API
  URL pattern) and its upstream model id, then by the provider's name as a genai-prices id.
- A price an admin entered by hand is never overwritten: a model whose price in force is manual is
  reported and left alone.
- A changed price becomes a new row from now on; older rows stay, so past costs never change.
- Tiered prices use their base tier; time-of-day discounts (DeepSeek's off-peak hours) are not
  modelled, so the highest price of the day is used: a cost is never under-reported.
"""

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from django.db import transaction
from django.utils import timezone
from genai_prices import data_snapshot
from genai_prices.types import ModelInfo, ModelPrice, TieredPrices

from routing.models import ModelEndpoint

from .models import Price
from .services import price_current, price_set

PriceTuple = tuple[Decimal, Decimal, Decimal | None, Decimal | None]  # input, output, cached input, cache write


@dataclass(frozen=True, slots=True)
class PriceChange:
    model: str
    old: PriceTuple | None
    new: PriceTuple | None
    action: str  # "add", "update", "same", "manual-kept", "not-found"
    note: str = ""


def price_sync(*, dry_run: bool = False, at: datetime | None = None) -> list[PriceChange]:
    """Compare every model's price in force with genai-prices; apply the differences unless `dry_run`."""
    at = at or timezone.now()
    changes = [_change_for(model, at) for model in ModelEndpoint.objects.select_related("provider").order_by("name")]
    if not dry_run:
        with transaction.atomic():
            for change in changes:
                if change.action in ("add", "update"):
                    model = ModelEndpoint.objects.get(name=change.model)
                    price_set(
                        model=model,
                        input_per_mtok=change.new[0],
                        output_per_mtok=change.new[1],
                        cached_input_per_mtok=change.new[2],
                        cache_write_per_mtok=change.new[3],
                        source=Price.Source.GENAI_PRICES,
                        effective_from=at,
                    )
    return changes


def genai_price_for(*, base_url: str, provider_name: str, upstream_model: str, at: datetime) -> PriceTuple | None:
    """The (input, output, cached input, cache write) USD per 1M tokens genai-prices has for this model, or None."""
    info = _model_info(base_url, provider_name, upstream_model)
    if info is None:
        return None
    day_start = at.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    prices = [_as_tuple(info.get_prices(day_start + timedelta(hours=h))) for h in range(24)]
    prices = [p for p in prices if p is not None]
    return max(prices, key=lambda p: (p[0], p[1])) if prices else None


def _change_for(model: ModelEndpoint, at: datetime) -> PriceChange:
    current = price_current(model=model, at=at)
    old = None
    if current is not None:
        old = (
            current.input_per_mtok,
            current.output_per_mtok,
            current.cached_input_per_mtok,
            current.cache_write_per_mtok,
        )
    new = genai_price_for(
        base_url=model.provider.base_url,
        provider_name=model.provider.name,
        upstream_model=model.upstream_model,
        at=at,
    )
    if new is None:
        return PriceChange(model.name, old, None, "not-found", "genai-prices has no price for it")
    if old == new:  # Decimal equality is numeric: 2.50 == 2.5
        return PriceChange(model.name, old, new, "same")
    if current is not None and current.source == Price.Source.MANUAL:
        return PriceChange(model.name, old, new, "manual-kept", "a price entered by hand wins")
    return PriceChange(model.name, old, new, "add" if old is None else "update")


def _model_info(base_url: str, provider_name: str, upstream_model: str) -> ModelInfo | None:
    snapshot = data_snapshot.get_snapshot()
    for provider_id, api_url in ((None, base_url), (provider_name, None)):
        try:
            return snapshot.find_provider_model(upstream_model, None, provider_id, api_url)[1]
        except LookupError:
            continue
    return None


def _as_tuple(price: ModelPrice) -> PriceTuple | None:
    keys = ("input_mtok", "output_mtok", "cache_read_mtok", "cache_write_mtok")
    values = [_base(getattr(price, key, None)) for key in keys]
    if values[0] is None or values[1] is None:
        return None
    return values[0], values[1], values[2], values[3]


def _base(value: Decimal | TieredPrices | None) -> Decimal | None:
    return value.base if isinstance(value, TieredPrices) else value
