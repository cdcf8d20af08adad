"""`{% load money %}` then `{{ amount|usd }}`: dollars as `billing.money.usd_text` writes them."""

from decimal import Decimal

from django import template

from billing.money import usd_text

register = template.Library()


@register.filter
def usd(amount: Decimal | int | str | None) -> str:
    """`amount` as dollars to read ("$12.50", "$0.000348"); empty for None."""
    return "" if amount is None else usd_text(amount)
