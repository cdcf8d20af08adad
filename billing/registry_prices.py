"""A model's `price` in the registry YAML file (routing/registry_file.py): billing owns that key.

Importing adds a new manual `Price` row only when the file's price differs from the price in force,
so importing the same file twice changes nothing; exporting writes the price in force.
"""

from typing import Any

from routing.models import ModelEndpoint
from routing.registry_file import ModelFileExtension, decimal_or_none, plain_number

from .pricing import price_cached_error
from .services import price_current, price_set

PRICE_KEYS = ("input_per_mtok", "output_per_mtok", "cached_input_per_mtok", "cache_write_per_mtok")
REQUIRED_PRICE_KEYS = ("input_per_mtok", "output_per_mtok")


class PriceInRegistryFile(ModelFileExtension):
    key = "price"

    def errors(self, where: str, value: Any) -> list[str]:
        if not isinstance(value, dict):
            return [f"{where}: price must be a mapping with input_per_mtok and output_per_mtok"]
        errors = [f"{where}: price: unknown key {k!r}" for k in sorted(set(value) - set(PRICE_KEYS))]
        for key in sorted(PRICE_KEYS):
            if value.get(key) is None:
                if key in REQUIRED_PRICE_KEYS:
                    errors.append(f"{where}: price: missing field {key!r}")
                continue
            number = decimal_or_none(value[key])
            if number is None or number < 0:
                errors.append(f"{where}: price.{key} must be a number ≥ 0, got {value[key]!r}")
        if not errors:
            problem = price_cached_error(
                input_per_mtok=decimal_or_none(value["input_per_mtok"]),
                cached_input_per_mtok=decimal_or_none(value.get("cached_input_per_mtok")),
            )
            if problem:
                errors.append(f"{where}: price.cached_input_per_mtok: {problem}")
        return errors

    def apply(self, model: ModelEndpoint, value: Any) -> bool:
        new = {key: decimal_or_none(value.get(key)) for key in PRICE_KEYS}
        current = price_current(model=model)
        if current is not None and all(getattr(current, key) == number for key, number in new.items()):
            return False
        price_set(model=model, **new)
        return True

    def export(self, model: ModelEndpoint) -> dict[str, Any] | None:
        price = price_current(model=model)
        if price is None:
            return None
        data = {
            "input_per_mtok": plain_number(price.input_per_mtok),
            "output_per_mtok": plain_number(price.output_per_mtok),
        }
        for key in ("cached_input_per_mtok", "cache_write_per_mtok"):
            if getattr(price, key) is not None:
                data[key] = plain_number(getattr(price, key))
        return data
