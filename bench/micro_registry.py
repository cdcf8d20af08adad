"""The registry snapshot of the in-process micro-benchmarks: one priced model (gpt-4o at $2.50 / $10 /
$1.25 cached per 1M tokens, in force since yesterday). Import after `django.setup()`."""

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from billing.metering import BillingSnapshot
from billing.pricing import PriceSnap
from routing.snapshot import ModelSnap, ProviderSnap


@dataclass(frozen=True)
class MicroRegistry:
    now: datetime
    model: ModelSnap
    price: PriceSnap
    snapshot: BillingSnapshot


def micro_registry(*, price_id: int | None = None) -> MicroRegistry:
    provider = ProviderSnap(1, "p", "https://x.test/v1", "", 5.0, 60.0, True)
    model = ModelSnap(1, "gpt-4o", "gpt-4o", provider, True, None)
    now = datetime.now(UTC)
    price = PriceSnap(now - timedelta(days=1), Decimal("2.5"), Decimal("10"), Decimal("1.25"), id=price_id)
    return MicroRegistry(now, model, price, BillingSnapshot(prices={model.id: (price,)}))
