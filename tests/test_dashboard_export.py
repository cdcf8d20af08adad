"""GET /dashboard/export.csv: the columns, the same filters and access rules as the page, and streaming."""

from __future__ import annotations

import csv
import gc
import io
import json
import tracemalloc
import warnings
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import httpx
from asgiref.sync import async_to_sync
from django.test import AsyncClient, Client

from billing.calls import call_rows_store
from billing.dashboard.export import CSV_ROWS_PER_CHUNK
from billing.models import Call
from routing.services import api_key_create
from tests.billing_fixtures import call_row, client_for, make_filters, matching

URL = "/dashboard/export.csv"
COLUMNS = [
    "created_at",
    "request_id",
    "user",
    "api_key",
    "requested",
    "model",
    "provider",
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
]


def rows_of(body: bytes) -> list[dict]:
    reader = csv.reader(io.StringIO(body.decode()))
    header = next(reader)
    assert header == COLUMNS
    return [dict(zip(header, row, strict=True)) for row in reader]


def expected_row(call: Call) -> dict:
    key = call.api_key
    return {
        "created_at": call.created_at.isoformat(),
        "request_id": call.request_id,
        "user": call.user.username if call.user else "",
        "api_key": f"{key.name} ({key.prefix}…)" if key else "",
        "requested": call.requested,
        "model": call.model.name if call.model else "",
        "provider": call.provider.name if call.provider else "",
        "kind": call.kind,
        "status": call.status,
        "prompt_tokens": str(call.prompt_tokens),
        "cached_tokens": str(call.cached_tokens),
        "cache_write_tokens": str(call.cache_write_tokens),
        "completion_tokens": str(call.completion_tokens),
        "usage_estimated": "true" if call.usage_estimated else "false",
        "cost_usd": "" if call.cost_usd is None else f"{call.cost_usd:f}",
        "saved_usd": "" if call.saved_usd is None else f"{call.saved_usd:f}",
        "latency_ms": str(call.latency_ms),
        "ttft_ms": "" if call.ttft_ms is None else str(call.ttft_ms),
        "attempts": call.attempts,
    }


def download(client: Client, params: dict | None = None) -> bytes:
    response = client.get(URL, params or {})
    assert response.status_code == 200
    assert response.streaming
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert response["Content-Disposition"].startswith('attachment; filename="routerweb-calls-')
    return b"".join(response.streaming_content)


def test_every_column_of_every_call_oldest_first(world, calls):
    body = download(client_for(world["root"]), {"range": "custom", "start": "2000-01-01", "end": "2000-12-31"})
    assert rows_of(body) == []
    rows = rows_of(download(client_for(world["root"])))
    for row in rows:
        row["attempts"] = json.loads(row["attempts"])
    wanted = sorted(matching(calls, make_filters()), key=lambda c: (c.created_at, c.id))
    calls_by_id = {c.request_id: c for c in Call.objects.select_related("user", "api_key", "model", "provider")}
    assert rows == [expected_row(calls_by_id[c.request_id]) for c in wanted]
    assert any(r["cost_usd"] == "" for r in rows) and any(r["ttft_ms"] == "" for r in rows)
    assert any(Decimal(r["cost_usd"] or 0) == Decimal("123.456789012345") for r in rows)


def test_the_filters_and_the_access_rules_are_the_pages(world, calls):
    m = world["models"]
    root = client_for(world["root"])
    cases = [
        ({"range": "7d"}, make_filters(days=(6, 7))),
        ({"model": "mini"}, make_filters(model_id=m["mini"].id)),
        ({"route": "smart", "user": "carol"}, make_filters(requested="smart", user_id=world["carol"].id)),
        ({"key": world["alice_dev"].id}, make_filters(api_key_id=world["alice_dev"].id)),
    ]
    for params, f in cases:
        ids = [r["request_id"] for r in rows_of(download(root, params))]
        assert ids == [c.request_id for c in sorted(matching(calls, f), key=lambda c: (c.created_at, c.id))], params
        assert ids, params
    alice = client_for(world["alice"])
    ids = {r["request_id"] for r in rows_of(download(alice))}
    assert ids == {c.request_id for c in matching(calls, make_filters(user_id=world["alice"].id))}
    assert alice.get(URL, {"user": "bob"}).status_code == 400
    assert alice.get(URL, {"key": world["bob_key"].id}).status_code == 400
    _, raw_key = api_key_create(user=world["bob"], name="export", reads_dashboard=True)
    by_key = Client(HTTP_AUTHORIZATION=f"Bearer {raw_key}").get(URL)
    assert {r["user"] for r in rows_of(b"".join(by_key.streaming_content))} == {"bob"}


def test_cells_a_spreadsheet_would_run_as_formulas_are_neutralised(world):
    call_rows_store([call_row(at=datetime.now(UTC), request_id="evil", requested="=HYPERLINK(1)")])
    (row,) = rows_of(download(client_for(world["root"]), {"range": "today"}))
    assert row["requested"] == "'=HYPERLINK(1)"


def insert_calls(count: int) -> None:
    now = datetime.now(UTC)
    attempts = [{"model": "m", "outcome": "ok", "status": 200, "latency_ms": 1, "reason": "ok"}]
    Call.objects.bulk_create(
        [
            Call(
                created_at=now - timedelta(seconds=i),
                request_id=f"bulk-{count}-{i}",
                requested="some-model-name",
                status="ok",
                http_status=200,
                prompt_tokens=1234,
                completion_tokens=567,
                cost_usd=Decimal("0.001234567891"),
                latency_ms=1500,
                attempts=attempts,
            )
            for i in range(count)
        ],
        batch_size=2000,
    )


def stream_under_asgi(user, params: dict) -> tuple[int, int, int]:
    """Stream the export through Django's ASGI handler; returns (chunks, bytes, peak traced memory)."""

    async def fetch():
        client = AsyncClient()
        await client.aforce_login(user)
        response = await client.get(URL, params)
        assert response.status_code == 200 and response.is_async
        chunks = size = 0
        async for chunk in response.streaming_content:
            chunks += 1
            size += len(chunk)
        return chunks, size

    gc.collect()
    tracemalloc.start()
    try:
        with warnings.catch_warnings():
            # Django warns (and reads everything into memory) when an ASGI response gets a sync iterator.
            warnings.simplefilter("error")
            chunks, size = async_to_sync(fetch)()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return chunks, size, peak


def test_the_export_streams_in_chunks_with_flat_memory_under_asgi(world):
    params = {"range": "7d"}
    insert_calls(2 * CSV_ROWS_PER_CHUNK)
    small_chunks, small_size, small_peak = stream_under_asgi(world["root"], params)
    insert_calls(20 * CSV_ROWS_PER_CHUNK)
    chunks, size, peak = stream_under_asgi(world["root"], params)
    assert small_chunks >= 3 and chunks >= 23  # the header and one chunk per CSV_ROWS_PER_CHUNK rows
    assert size > 10 * small_size
    # Eleven times the rows, about the same memory: nothing holds the whole export (holding it would
    # add at least the extra CSV text, let alone the rows it was made from).
    assert peak - small_peak < (size - small_size) / 3, (peak, small_peak, size, small_size)


def test_the_export_streams_through_the_live_server(gateway, world, calls):
    _, raw_key = api_key_create(user=world["root"], name="export", reads_dashboard=True)
    with (
        httpx.Client(base_url=gateway.url, headers={"Authorization": f"Bearer {raw_key}"}) as http,
        http.stream("GET", URL, params={"model": "gpt-4o"}) as response,
    ):
        assert response.status_code == 200
        assert "content-length" not in response.headers
        body = b"".join(response.iter_bytes())
    ids = [r["request_id"] for r in rows_of(body)]
    wanted = matching(calls, make_filters(model_id=world["models"]["gpt-4o"].id))
    assert ids == [c.request_id for c in sorted(wanted, key=lambda c: (c.created_at, c.id))]
