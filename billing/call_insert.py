"""Inserting many call rows fast: COPY on PostgreSQL, one executemany elsewhere.

Every request's row comes through here (in the row writer process), so the column types of `Call`
are converted directly rather than through `bulk_create`'s SQL compiler (docs/architecture.md). The
rows are the dicts the recorder spools (Call attnames as keys; read back from the spool they hold
JSON forms, built in-process datetimes and Decimals), and missing keys take the field's default."""

from collections.abc import Callable
from datetime import datetime
from functools import cache
from operator import itemgetter
from typing import Any

import orjson
from django.db import connection, models

from .models import Call, CallBody

COLUMNS = [field for field in Call._meta.concrete_fields if not field.primary_key]


def calls_insert(rows: list[dict[str, Any]]) -> None:
    """Insert `rows` into the call table, inside the caller's transaction (no conflict handling)."""
    if not rows:
        return
    table = connection.ops.quote_name(Call._meta.db_table)
    names = ", ".join(connection.ops.quote_name(field.column) for field in COLUMNS)
    values = _column_values(rows, connection.vendor)
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            with cursor.cursor.copy(f"COPY {table} ({names}) FROM STDIN") as copy:
                for row in values:
                    copy.write_row(row)
        else:
            placeholders = ", ".join(["%s"] * len(COLUMNS))
            cursor.executemany(f"INSERT INTO {table} ({names}) VALUES ({placeholders})", values)


def _column_values(rows: list[dict[str, Any]], vendor: str) -> list[list[Any]]:
    """Each row's values in COLUMNS order, converted where the database needs it."""
    get_all, defaults, conversions = _column_plan(vendor)
    values = []
    for row in rows:
        try:
            value = list(get_all(row))
        except KeyError:  # a row spooled by an older version, without a newer column
            value = [row.get(name, default) for name, default in defaults]
        for index, convert in conversions:
            value[index] = convert(value[index])
        values.append(value)
    return values


@cache
def _column_plan(
    vendor: str,
) -> tuple[Callable[[dict], tuple], list[tuple[str, Any]], list[tuple[int, Callable[[Any], Any]]]]:
    """How to read a row: all its values at once, the (attname, default) pairs for a row that lacks
    some, and (index, function) for the columns whose values need converting, decided once per vendor."""
    names = [field.attname for field in COLUMNS]
    defaults = [(field.attname, field.get_default()) for field in COLUMNS]
    conversions = []
    for index, field in enumerate(COLUMNS):
        convert = _converter(field, vendor)
        if convert is not None:
            conversions.append((index, convert))
    return itemgetter(*names), defaults, conversions


def _converter(field: models.Field, vendor: str) -> Callable[[Any], Any] | None:
    """None when the value goes to the database as it is."""
    if isinstance(field, models.JSONField):
        return lambda value: None if value is None else orjson.dumps(value).decode()
    if vendor == "postgresql":
        # COPY takes datetimes and Decimals as they are, and their text forms from the spool too.
        return None
    if isinstance(field, models.DateTimeField):
        return lambda value: connection.ops.adapt_datetimefield_value(
            datetime.fromisoformat(value) if isinstance(value, str) else value
        )
    if isinstance(field, models.DecimalField):
        return lambda value: None if value is None else str(value)
    return None


def call_bodies_insert(rows: list[dict[str, Any]]) -> None:
    """Insert the bodies that `rows` carry (a row's `body`, built by billing/call_body_build.py), inside
    the caller's transaction: a call's body is stored with its row or not at all."""
    bodies = [_call_body(row["request_id"], row["created_at"], row["body"]) for row in rows if row.get("body")]
    if bodies:
        CallBody.objects.bulk_create(bodies)


def _call_body(request_id: str, created_at: Any, body: dict[str, Any]) -> CallBody:
    return CallBody(
        request_id=request_id,
        created_at=created_at,
        request=body.get("request") or {},
        answer=body.get("answer") or "",
        tool_calls=body.get("tool_calls") or [],
        request_truncated=bool(body.get("request_truncated")),
        answer_truncated=bool(body.get("answer_truncated")),
    )
