"""The CSV export: every call the filters select, oldest first, streamed as CSV text.

Raw `Call` rows come through a server-side cursor (on PostgreSQL), a chunk at a time, and leave as
text a chunk of rows at a time: memory stays flat however many rows there are.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator
from typing import Any

import orjson

from .access import CallFilters, calls_matching

CSV_ROWS_PER_CHUNK = 1000

# CSV column -> the Call fields it is made of (the key shows as "name (prefix…)").
_EXPORT_SOURCES = {
    "created_at": ("created_at",),
    "request_id": ("request_id",),
    "user": ("user__username",),
    "api_key": ("api_key__name", "api_key__prefix"),
    "requested": ("requested",),
    "model": ("model__name",),
    "provider": ("provider__name",),
    **{
        name: (name,)
        for name in (
            "kind",
            "status",
            "prompt_tokens",
            "cached_tokens",
            "cache_write_tokens",
            "completion_tokens",
            "usage_estimated",
            "cost_usd",
            "saved_usd",
            "latency_ms",
            "ttft_ms",
            "attempts",
        )
    },
}
EXPORT_COLUMNS = tuple(_EXPORT_SOURCES)
_EXPORT_FIELDS = tuple(field for fields in _EXPORT_SOURCES.values() for field in fields)
_KEY_AT = _EXPORT_FIELDS.index("api_key__name")


def call_export_rows(*, filters: CallFilters, chunk_size: int = 2000) -> Iterator[tuple[Any, ...]]:
    """Every matching call, oldest first, as tuples in `EXPORT_COLUMNS` order (the key as "name (prefix…)").

    Rows come through a server-side cursor (on PostgreSQL) `chunk_size` at a time: memory stays flat
    however many rows there are.
    """
    rows = calls_matching(filters=filters).order_by("created_at", "id").values_list(*_EXPORT_FIELDS)
    for row in rows.iterator(chunk_size=chunk_size):
        name, prefix = row[_KEY_AT], row[_KEY_AT + 1]
        yield (*row[:_KEY_AT], f"{name} ({prefix}…)" if prefix is not None else None, *row[_KEY_AT + 2 :])


def call_export_csv(*, filters: CallFilters, rows_per_chunk: int = CSV_ROWS_PER_CHUNK) -> Iterator[str]:
    """The export of `filters` as CSV text: the header, then `rows_per_chunk` rows per chunk."""
    return csv_chunks(rows=call_export_rows(filters=filters), rows_per_chunk=rows_per_chunk)


def csv_chunks(*, rows: Iterable[tuple[Any, ...]], rows_per_chunk: int = CSV_ROWS_PER_CHUNK) -> Iterator[str]:
    """The header, then `rows` (in `EXPORT_COLUMNS` order) as CSV text, `rows_per_chunk` rows per chunk."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(EXPORT_COLUMNS)
    for count, row in enumerate(rows, 1):
        writer.writerow(_csv_cells(row))
        if count % rows_per_chunk == 0:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()


def _csv_cells(row: tuple[Any, ...]) -> list[Any]:
    created_at, request_id, user, key, requested, model, provider, kind, status, *numbers = row
    prompt, cached, cache_write, completion, estimated, cost, saved, latency, ttft, attempts = numbers
    return [
        created_at.isoformat(),
        request_id,
        _text(user),
        _text(key),
        _text(requested),
        _text(model),
        _text(provider),
        kind,
        status,
        prompt,
        cached,
        cache_write,
        completion,
        "true" if estimated else "false",
        "" if cost is None else f"{cost:f}",
        "" if saved is None else f"{saved:f}",
        latency,
        "" if ttft is None else ttft,
        orjson.dumps(attempts).decode(),
    ]


def _text(value: str | None) -> str:
    """A text cell; one that a spreadsheet would run as a formula gets a leading apostrophe."""
    if not value:
        return ""
    return f"'{value}" if value[0] in "=+-@\t\r" else value
