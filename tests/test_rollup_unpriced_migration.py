"""Rollups stored before the unpriced-token counters existed get them at migrate (billing 0013)."""

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

BEFORE = [("billing", "0012_call_price_provenance")]
AT = datetime(2026, 11, 3, 14, 25, tzinfo=UTC)
HOUR, DAY = AT.replace(minute=0), AT.replace(hour=0, minute=0)


@pytest.mark.django_db(transaction=True)
def test_the_unpriced_calls_tokens_are_counted_into_existing_rollups():
    executor = MigrationExecutor(connection)
    executor.migrate(BEFORE)
    apps = executor.loader.project_state(BEFORE).apps
    Call, CallRollup = apps.get_model("billing", "Call"), apps.get_model("billing", "CallRollup")
    calls = [("free", None, 100, 10, 7), ("free", None, 50, 0, 3), ("paid", Decimal("0.001"), 80, 20, 9)]
    for number, (requested, cost, prompt, cached, completion) in enumerate(calls):
        Call.objects.create(
            created_at=AT, request_id=f"r{number}", requested=requested, model_id=5, status="ok", http_status=200,
            prompt_tokens=prompt, cached_tokens=cached, completion_tokens=completion, cost_usd=cost,
            unpriced=cost is None,
        )  # fmt: skip
    for period, bucket in (("hour", HOUR), ("day", DAY)):
        for requested in ("free", "paid"):
            CallRollup.objects.create(
                period=period, bucket_start=bucket, user_id=0, api_key_id=0, model_id=5, requested=requested,
                status="ok", calls=1,
            )  # fmt: skip

    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())

    from billing.models import CallRollup as Current

    counters = ("unpriced_prompt_tokens", "unpriced_cached_tokens", "unpriced_completion_tokens")
    rows = {(r["period"], r["requested"]): tuple(r[c] for c in counters) for r in Current.objects.values()}
    assert rows == {
        ("hour", "free"): (150, 10, 10),
        ("day", "free"): (150, 10, 10),
        ("hour", "paid"): (0, 0, 0),
        ("day", "paid"): (0, 0, 0),
    }
