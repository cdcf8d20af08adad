"""Dollar amounts as text: the one place that decides how money reads.

`usd_text` is for people (pages, budget messages; static/billing/dashboard.js `usdText` follows the
same rules in the browser), `usd_figure` the same without the dollar sign. `usd_json` is the exact
form the JSON documents carry.
"""

from __future__ import annotations

from decimal import ROUND_DOWN, Decimal

SIGNIFICANT = 3  # digits shown of an amount under a dollar


def usd_text(amount: Decimal | int | str) -> str:
    """Dollars to read: "$0.00", "$0.000348", "$0.01", "$12.50", "$1,234.56", "$25.00" (see `usd_figure`)."""
    figure = usd_figure(amount)
    return f"-${figure[1:]}" if figure.startswith("-") else f"${figure}"


def usd_figure(amount: Decimal | int | str) -> str:
    """The figure of `usd_text`, without the dollar sign: "0.000348", "12.50", "1,234.56".

    - Cents at least, always: $12.50, never $12.5 or $13.
    - Under a dollar, down to the third significant digit, so small amounts stay apart: $0.000348.
    - Cut, never rounded: no figure is ever shown above its value, so a spend just under a limit
      never reads as the limit itself ($4.999 of $5.00 reads $4.99).
    """
    value = Decimal(amount)
    sign = "-" if value < 0 else ""
    value = abs(value)
    places = 2
    if 0 < value < 1:
        places = max(2, SIGNIFICANT - 1 - value.adjusted())  # adjusted(): the leading digit's exponent
    cut = value.quantize(Decimal(1).scaleb(-places), rounding=ROUND_DOWN)
    whole, _, fraction = f"{cut:,.{places}f}".partition(".")
    fraction = fraction.rstrip("0").ljust(2, "0")
    return f"{sign if cut else ''}{whole}.{fraction}"


def usd_json(amount: Decimal) -> str:
    """Exact dollars as a JSON string, at least 2 decimals, no trailing zeros beyond: "12.50", "0.000125"."""
    whole, _, fraction = f"{amount:f}".partition(".")
    return f"{whole}.{fraction.rstrip('0').ljust(2, '0')}"
