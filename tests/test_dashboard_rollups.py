"""Rollups: maintained as calls are stored, rebuilt from the raw rows, and the two always agree."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.db.models import Count, Sum
from django.forms.models import model_to_dict

from billing.calls import Tokens, call_cost, call_rows_store
from billing.dashboard.access import CallFilters
from billing.dashboard.aggregates import call_slices, call_totals
from billing.models import HISTOGRAM_BOUNDS_MS, LATENCY_COLUMNS, TTFT_COLUMNS, Call, CallRollup, Price
from billing.rollups import answered_by_fallback, cost_pusd, histogram_bucket, hour_start, rollups_rebuild
from billing.services import price_set
from routing.metering import CallOutcome
from routing.models import ModelEndpoint, PreferenceVote
from routing.registry import registry_load
from routing.services import api_key_create
from tests.billing_fixtures import attempt, call_row, cost_of, is_fallback, make_filters, matching
from tests.factories import model_create, route_create, user_create


def rollup_rows(**filters) -> list[tuple]:
    """Every rollup row as a comparable tuple (the bucket normalised to UTC)."""
    rows = []
    for rollup in CallRollup.objects.filter(**filters):
        values = model_to_dict(rollup)
        values["bucket_start"] = rollup.bucket_start.astimezone(UTC)
        rows.append(tuple(sorted(values.items())))
    return sorted(rows)


# ---------------------------------------------------------------------------- the shared definitions


def test_a_fallback_is_an_answer_after_at_least_one_other_entry():
    assert not answered_by_fallback([attempt("a", "ok")])
    assert answered_by_fallback([attempt("a", "error"), attempt("b", "ok")])
    assert answered_by_fallback([attempt("a", "skipped"), attempt("b", "ok")])
    assert answered_by_fallback([attempt("a", "skipped"), attempt("b", "error"), attempt("c", "ok")])
    assert not answered_by_fallback([attempt("a", "error"), attempt("b", "error")])
    assert not answered_by_fallback([])
    assert not answered_by_fallback(None)
    assert not answered_by_fallback("not a list")


def test_histogram_buckets_include_their_upper_bound():
    assert histogram_bucket(0) == 0
    assert histogram_bucket(HISTOGRAM_BOUNDS_MS[0]) == 0
    assert histogram_bucket(HISTOGRAM_BOUNDS_MS[0] + 1) == 1
    assert histogram_bucket(HISTOGRAM_BOUNDS_MS[-1]) == len(HISTOGRAM_BOUNDS_MS) - 1
    assert histogram_bucket(HISTOGRAM_BOUNDS_MS[-1] + 1) == len(HISTOGRAM_BOUNDS_MS)
    assert len(LATENCY_COLUMNS) == len(TTFT_COLUMNS) == len(HISTOGRAM_BOUNDS_MS) + 1


def test_costs_and_buckets_from_spooled_values():
    assert cost_pusd(None) == 0
    assert cost_pusd("0.000000000001") == 1
    assert cost_pusd(Decimal("123.456789012345")) == 123_456_789_012_345
    at = datetime(2025, 3, 9, 23, 59, 59, 999_999, tzinfo=UTC)
    assert hour_start(at) == hour_start(at.isoformat()) == datetime(2025, 3, 9, 23, tzinfo=UTC)
    paris = at.astimezone(timezone(timedelta(hours=1)))
    assert hour_start(paris.isoformat()) == datetime(2025, 3, 9, 23, tzinfo=UTC)


# ---------------------------------------------------------------------------- maintained = rebuilt = raw


def test_rebuilt_rollups_equal_maintained_rollups(world, calls):
    maintained = rollup_rows()
    assert len(maintained) > 500
    assert rollups_rebuild() == 700
    assert rollup_rows() == maintained


def test_a_partial_rebuild_since_a_day_equals_the_maintained_rollups(world, calls):
    maintained = rollup_rows()
    since = (datetime.now(UTC) - timedelta(days=9)).date()
    CallRollup.objects.filter(bucket_start__gte=datetime(since.year, since.month, since.day, tzinfo=UTC)).update(
        calls=0
    )  # damage the days that will be rebuilt
    out = io.StringIO()
    call_command("rebuild_rollups", since=since.isoformat(), stdout=out)
    assert f"since {since}" in out.getvalue()
    assert rollup_rows() == maintained


def test_rebuild_rollups_command_rejects_a_bad_date(db):
    with pytest.raises(CommandError, match="--since must be a date"):
        call_command("rebuild_rollups", since="last tuesday")


def test_day_rows_are_the_sums_of_their_hour_rows(world, calls):
    columns = ["calls", "fallback_calls", "cost_pusd", "prompt_tokens", *LATENCY_COLUMNS, *TTFT_COLUMNS]
    for day in CallRollup.objects.filter(period="day")[:50]:
        hours = CallRollup.objects.filter(
            period="hour",
            bucket_start__gte=day.bucket_start,
            bucket_start__lt=day.bucket_start + timedelta(days=1),
            user_id=day.user_id,
            api_key_id=day.api_key_id,
            model_id=day.model_id,
            requested=day.requested,
            status=day.status,
        ).aggregate(**{c: Sum(c) for c in columns})
        assert {c: getattr(day, c) for c in columns} == {c: int(v) for c, v in hours.items()}


def test_a_replayed_batch_is_not_counted_twice(world):
    model = world["models"]["gpt-4o"]
    rows = [
        call_row(at=datetime.now(UTC), request_id=f"r{i}", requested="gpt-4o", model=model, cost=Decimal("0.5"))
        for i in range(3)
    ]
    call_rows_store(rows)
    call_rows_store(rows)  # a spool replayed after a crash
    totals = call_totals(slices=call_slices(filters=make_filters(days=(0, 1))))
    assert (totals.calls, totals.cost_usd) == (3, Decimal("1.5"))


def test_a_row_naming_deleted_rows_is_counted_without_those_links(world):
    # A spool replayed after its user, key and model (and the model's provider) were deleted.
    doomed_user = user_create("doomed")
    doomed_key = api_key_create(user=doomed_user, name="doomed")[0]
    doomed_model = model_create(name="doomed-model", price=(1, 2))
    row = call_row(
        at=datetime.now(UTC),
        request_id="orphan",
        requested="doomed-model",
        user_id=doomed_user.id,
        api_key_id=doomed_key.id,
        model=doomed_model,
        cost=Decimal("0.5"),
    )
    kept = call_row(
        at=datetime.now(UTC), request_id="kept", requested="gpt-4o", api_key_id=world["bob_key"].id, model=None
    )
    doomed_model.delete()
    doomed_model.provider.delete()
    doomed_key.delete()
    doomed_user.delete()
    call_rows_store([row, kept])
    orphan = Call.objects.get(request_id="orphan")
    assert (orphan.user_id, orphan.api_key_id, orphan.model_id, orphan.provider_id) == (None, None, None, None)
    assert orphan.cost_usd == Decimal("0.5")
    assert Call.objects.get(request_id="kept").api_key_id == world["bob_key"].id
    rollup = CallRollup.objects.get(period="hour", requested="doomed-model")
    assert (rollup.user_id, rollup.api_key_id, rollup.model_id, rollup.calls) == (0, 0, 0, 1)
    maintained = rollup_rows()
    rollups_rebuild()
    assert rollup_rows() == maintained


def test_deleting_a_key_or_model_clears_the_link_of_its_stored_calls(world):
    key, model = world["bob_key"], world["models"]["local"]
    call_rows_store(
        [call_row(at=datetime.now(UTC), request_id="r1", requested="local", api_key_id=key.id, model=model)]
    )
    key.delete()
    model.delete()
    call = Call.objects.get(request_id="r1")
    assert (call.api_key_id, call.model_id, call.provider_id) == (None, None, model.provider_id)


def test_the_call_table_has_no_foreign_key_constraints_and_no_redundant_index(db):
    """Each constraint and index is paid for by every call's insert (docs/benchmarks.md)."""
    with connection.cursor() as cursor:
        constraints = connection.introspection.get_constraints(cursor, Call._meta.db_table)
    assert not [name for name, c in constraints.items() if c["foreign_key"]]
    indexed = sorted(
        tuple(c["columns"]) for c in constraints.values() if (c["index"] or c["unique"]) and not c["primary_key"]
    )
    assert indexed == [
        ("api_key_id", "created_at"),
        ("created_at", "id"),
        ("model_id", "created_at"),
        ("provider_id",),
        ("request_id",),
        ("user_id", "created_at"),
    ]


def test_calls_through_the_live_gateway_are_rolled_up(http, fake_model, recorded_calls):
    fake_model("bad", "echo+status=503", price=(1, 2))
    fake_model("good", "echo+words=12", price=(Decimal("2.5"), 10))
    fake_model("streamer", "echo+latency=60+words=5")
    route_create("r", ["bad", "good"])
    for body in (
        {"model": "r"},
        {"model": "r", "stream": True},
        {"model": "good"},
        {"model": "bad"},
        {"model": "streamer", "stream": True},
    ):
        payload = {"messages": [{"role": "user", "content": "hi there"}], **body}
        if body.get("stream"):
            with http.stream("POST", "/v1/chat/completions", json=payload) as response:
                response.read()
        else:
            http.post("/v1/chat/completions", json=payload)
    rows = recorded_calls()
    assert len(rows) == 5
    f = make_filters(days=(0, 1))
    totals = call_totals(slices=call_slices(filters=f))
    assert totals.calls == 5
    assert totals.fallback_calls == sum(is_fallback(c) for c in rows) == 2
    assert totals.error_calls == 1
    assert totals.unpriced_calls == 1
    assert totals.cost_usd == cost_of(rows) > 0
    streamer = CallRollup.objects.get(period="hour", requested="streamer")
    assert sum(getattr(streamer, c) for c in TTFT_COLUMNS) == 1
    maintained = rollup_rows()
    rollups_rebuild()
    assert rollup_rows() == maintained


# ---------------------------------------------------------------------------- generate_calls


def test_generate_calls_fills_a_realistic_database_with_matching_rollups(db):
    until = datetime(2025, 6, 18, 15, 30, tzinfo=UTC)
    out = io.StringIO()
    call_command("generate_calls", rows=3000, users=8, days=30, seed=3, until=until, no_progress=True, stdout=out)
    assert "added 3000 calls over 30 days for 8 users" in out.getvalue()
    calls = list(Call.objects.all())
    assert len(calls) == 3000
    assert min(c.created_at for c in calls) >= until - timedelta(days=30)
    assert max(c.created_at for c in calls) <= until
    statuses = dict(Call.objects.values_list("status").annotate(n=Count("id")))
    assert set(statuses) == {"ok", "error", "rejected"}  # the gateway never records a cache_hit
    assert statuses["ok"] > 2500
    # The demo registry, seeded now, prices a model from the first synthetic day on.
    assert sum(c.cost_usd > 0 for c in calls if c.cost_usd is not None) > 2500
    assert sum(is_fallback(c) for c in calls) > 5
    assert any(c.unpriced for c in calls) and any(c.ttft_ms for c in calls)
    assert len({c.api_key_id for c in calls}) > 8
    assert PreferenceVote.objects.count() > 0
    f = CallFilters(start=datetime(2025, 5, 20, tzinfo=UTC), end=datetime(2025, 6, 19, tzinfo=UTC))
    totals = call_totals(slices=call_slices(filters=f))
    assert (totals.calls, totals.cost_usd) == (len(matching(calls, f)), cost_of(matching(calls, f)))
    assert totals.calls == 3000
    built = rollup_rows()
    rows = [call_row_of(c) for c in calls]
    CallRollup.objects.all().delete()
    Call.objects.all().delete()
    call_rows_store(rows)  # the same calls, stored the way the gateway stores them
    assert rollup_rows() == built


def test_generate_calls_prices_each_call_as_the_gateway_does(db):
    """cost = call_cost(tokens) with the registry's price in force at the call's time, price changes included."""
    until = datetime(2025, 6, 18, 15, 30, tzinfo=UTC)
    change = datetime(2025, 6, 1, tzinfo=UTC)
    call_command("seed_demo", stdout=io.StringIO())
    Price.objects.update(effective_from=datetime(2025, 1, 1, tzinfo=UTC))
    mini = ModelEndpoint.objects.get(name="gpt-4o-mini")
    price_set(model=mini, input_per_mtok=Decimal("0.3"), output_per_mtok=Decimal("1.1"), effective_from=change)
    call_command(
        "generate_calls", rows=2000, users=6, days=30, seed=5, until=until, no_progress=True, stdout=io.StringIO()
    )
    registry = registry_load()
    models = {model.id: model for model in registry.models.values()}
    calls = list(Call.objects.all())
    for c in calls:
        tokens = Tokens(c.prompt_tokens, c.cached_tokens, c.completion_tokens, c.usage_estimated)
        outcome = CallOutcome(
            request_id=c.request_id,
            created_at=c.created_at,
            source=c.source,
            user_id=None,
            api_key_id=None,
            requested=c.requested,
            model=models.get(c.model_id),
            status=c.status,
            http_status=c.http_status,
            snapshot_part=registry.metering,
        )
        cost = call_cost(outcome, tokens)
        assert c.cost_usd == (None if cost is None else cost.quantize(Decimal("1e-12"))), c.request_id
        assert c.unpriced == (cost is None)
    by_mini = [c.created_at for c in calls if c.model_id == mini.id and c.prompt_tokens]
    assert min(by_mini) < change < max(by_mini)
    assert any(c.usage_estimated and c.cost_usd for c in calls)
    assert not any(c.status == "cache_hit" for c in calls)


def call_row_of(call: Call) -> dict:
    fields = [f.attname for f in Call._meta.concrete_fields if f.attname != "id"]
    return {name: getattr(call, name) for name in fields}


def test_generate_calls_is_repeatable_with_a_seed(db):
    until = datetime(2025, 6, 18, 15, 30, tzinfo=UTC)

    def run():
        options = dict(rows=500, users=5, days=10, seed=11, until=until, no_progress=True, stdout=io.StringIO())
        call_command("generate_calls", **options)
        rows = [{k: v for k, v in call_row_of(c).items() if k != "request_id"} for c in Call.objects.order_by("id")]
        Call.objects.all().delete()
        return rows

    assert run() == run()
