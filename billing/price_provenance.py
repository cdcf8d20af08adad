"""Price provenance: which price produced a call's cost, stored on its row and shown with it.

`price_provenance_columns` gives the row's columns from the price the call was priced with (taken
from the registry snapshot already in memory: no read). `price_provenance_of` reads them back from a
stored `Call` as a `PriceProvenance`, which the call page and the JSON documents show.

What each kind of call keeps:

- answered and priced (ok, fallback, estimated tokens, an error after a model answered): the price
  in force for the answering model at the call's time;
- a cache hit (it cost nothing): the price in force when the replayed call was made, the one that
  priced its saving (`saved_usd`);
- unpriced (the model had no price), or no model answered: none.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from .money import usd_json, usd_text
from .pricing import PriceSnap

PROVENANCE_COLUMNS = (
    "price_id",
    "price_input_per_mtok",
    "price_cached_input_per_mtok",
    "price_cache_write_per_mtok",
    "price_output_per_mtok",
    "price_effective_from",
)
_NONE = dict.fromkeys(PROVENANCE_COLUMNS)


# Every call's row carries these columns, and orjson turns Decimals and datetimes into JSON through
# a Python callback: 4 µs per row, as much as the rest of the spool line. So each price's columns
# are built once, as the JSON strings the spool and the row writer take, and reused by every call it
# prices. Keyed by the object's id, checked by identity (the entry keeps its price alive, so the id
# cannot be reused while the entry exists); cleared when registry reloads have left many behind.
_COLUMNS_BY_PRICE: dict[int, tuple[PriceSnap, dict[str, Any]]] = {}
_COLUMNS_KEPT = 4096


def price_provenance_columns(price: PriceSnap | None) -> dict[str, Any]:
    """The call row's provenance columns for `price` (all None without one), in their spooled forms
    (rates as decimal strings, the date in ISO 8601), built once per price."""
    if price is None:
        return _NONE
    entry = _COLUMNS_BY_PRICE.get(id(price))
    if entry is None or entry[0] is not price:
        if len(_COLUMNS_BY_PRICE) >= _COLUMNS_KEPT:
            _COLUMNS_BY_PRICE.clear()
        cached, written = price.cached_input_per_mtok, price.cache_write_per_mtok
        columns = {
            "price_id": price.id,
            "price_input_per_mtok": str(price.input_per_mtok),
            "price_cached_input_per_mtok": None if cached is None else str(cached),
            "price_cache_write_per_mtok": None if written is None else str(written),
            "price_output_per_mtok": str(price.output_per_mtok),
            "price_effective_from": price.effective_from.isoformat(),
        }
        entry = _COLUMNS_BY_PRICE[id(price)] = (price, columns)
    return entry[1]


@dataclass(frozen=True, slots=True)
class PriceProvenance:
    """The price a call was priced with, as stored on its row (USD per 1M tokens)."""

    price_id: int | None
    input_per_mtok: Decimal
    cached_input_per_mtok: Decimal | None  # None: cached tokens were priced as input
    output_per_mtok: Decimal
    effective_from: datetime
    of_replayed_call: bool  # a cache hit's: the price that priced the replayed call (its saving)
    cache_write_per_mtok: Decimal | None = None  # None: tokens written to the cache were priced as input

    def text(self) -> str:
        """One line for people, e.g. "price #12, in force from 2026-11-01 00:00 UTC: $2.50 input,
        $1.25 cached input, $10.00 output per 1M tokens"."""
        row = f"price #{self.price_id}" if self.price_id is not None else "a price"
        cached = "as input" if self.cached_input_per_mtok is None else usd_text(self.cached_input_per_mtok)
        written = "" if self.cache_write_per_mtok is None else f"{usd_text(self.cache_write_per_mtok)} cache write, "
        rates = f"{usd_text(self.input_per_mtok)} input, {cached} cached input, {written}"
        rates += f"{usd_text(self.output_per_mtok)} output"
        line = f"{row}, in force from {self.effective_from:%Y-%m-%d %H:%M} UTC: {rates} per 1M tokens"
        return f"the replayed call's {line}" if self.of_replayed_call else line

    def as_json(self) -> dict[str, Any]:
        """JSON-ready (rates as exact decimal strings)."""
        cached = self.cached_input_per_mtok
        return {
            "price_id": self.price_id,
            "input_per_mtok": usd_json(self.input_per_mtok),
            "cached_input_per_mtok": None if cached is None else usd_json(cached),
            "cache_write_per_mtok": None if self.cache_write_per_mtok is None else usd_json(self.cache_write_per_mtok),
            "output_per_mtok": usd_json(self.output_per_mtok),
            "effective_from": self.effective_from.isoformat(),
            "of_replayed_call": self.of_replayed_call,
            "text": self.text(),
        }


def price_provenance_of(call: Any) -> PriceProvenance | None:
    """The provenance stored on `call` (a `Call`, or anything with its attributes); None when no price
    was used (unpriced, no model answered) or the row predates provenance."""
    if call.price_input_per_mtok is None or call.price_output_per_mtok is None or call.price_effective_from is None:
        return None
    return PriceProvenance(
        price_id=call.price_id,
        input_per_mtok=call.price_input_per_mtok,
        cached_input_per_mtok=call.price_cached_input_per_mtok,
        cache_write_per_mtok=call.price_cache_write_per_mtok,
        output_per_mtok=call.price_output_per_mtok,
        effective_from=call.price_effective_from,
        of_replayed_call=call.status == "cache_hit",
    )


NO_PRICE_TEXT = {
    "cache_hit": "no price: the replayed call's model had none when that call was made, so the saving is unknown",
    "unpriced": "no price: the model that answered had none at the call's time, so the cost is unknown",
    "no_model": "no price: no model answered, so nothing was charged",
}


def price_provenance_text(call: Any) -> str:
    """The provenance of `call` in one line, or why there is none."""
    provenance = price_provenance_of(call)
    if provenance is not None:
        return provenance.text()
    if call.model_id is None:
        return NO_PRICE_TEXT["no_model"]
    if call.status == "cache_hit":
        return NO_PRICE_TEXT["cache_hit"] if call.saved_usd is None else NOT_RECORDED
    if call.unpriced:
        return NO_PRICE_TEXT["unpriced"]
    return NOT_RECORDED


NOT_RECORDED = "not recorded (the call was stored before price provenance was kept)"
