"""Cost tracking through the live gateway: exact costs, streaming rules, price history, budgets, spool."""

import io
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import date, timedelta
from decimal import Decimal

import httpx
import orjson
import pytest
from django.core.management import call_command
from django.utils import timezone

from billing.budget_upkeep import budget_upkeep
from billing.budgets import DEFAULT_MAX_OUTPUT_TOKENS, period_start_for
from billing.models import Budget, Call, Price, QuarantinedRow
from billing.pricing import cost_for_usage
from billing.recorder import CallRecorder
from billing.services import price_set
from routing.models import ApiKey
from routing.usage import prompt_tokens_estimate, tokens_estimate
from tests.billing_fixtures import budget_for, worst_case_usd
from tests.conftest import REPO_ROOT
from tests.factories import model_create, provider_create

MESSAGES = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "count the costs please"}]


def post(http, model, timeout=20, **body):
    return http.post("/v1/chat/completions", json={"model": model, "messages": MESSAGES, **body}, timeout=timeout)


def stream_text(http, model, **body) -> str:
    payload = {"model": model, "messages": MESSAGES, "stream": True, **body}
    with http.stream("POST", "/v1/chat/completions", json=payload) as response:
        return "".join(line for line in response.iter_lines())


def expected_cost(price: Price, call: Call) -> Decimal:
    return cost_for_usage(
        price,
        prompt_tokens=call.prompt_tokens,
        cached_tokens=call.cached_tokens,
        completion_tokens=call.completion_tokens,
    )


# ---------------------------------------------------------------------------- pricing arithmetic


def test_cost_is_exact_decimal_with_cached_tokens_at_the_cached_price():
    price = Price(input_per_mtok=Decimal("2.5"), output_per_mtok=Decimal("10"), cached_input_per_mtok=Decimal("1.25"))
    cost = cost_for_usage(price, prompt_tokens=1234, cached_tokens=1000, completion_tokens=567)
    assert cost == (234 * Decimal("2.5") + 1000 * Decimal("1.25") + 567 * Decimal("10")) / 1_000_000
    assert cost == Decimal("0.007505")


def test_cached_tokens_cost_the_input_price_when_no_cached_price():
    price = Price(input_per_mtok=Decimal("0.123456"), output_per_mtok=Decimal("7.654321"), cached_input_per_mtok=None)
    cost = cost_for_usage(price, prompt_tokens=7, cached_tokens=3, completion_tokens=11)
    assert cost == Decimal("0.000000864192") + Decimal("0.000084197531")


def test_token_estimator_rules():
    assert tokens_estimate("") == 0
    assert tokens_estimate("abcd") == 1
    assert tokens_estimate("abcde") == 2
    messages = [{"role": "user", "content": "12345678"}, {"role": "user", "content": [{"type": "text", "text": "abc"}]}]
    assert prompt_tokens_estimate(messages) == 3 + (4 + 2) + (4 + 1)


# ---------------------------------------------------------------------------- cost rows through the gateway


def test_sum_of_row_costs_is_exact_over_a_mix_of_models_and_streams(http, fake_model, recorded_calls):
    models = {
        "gpt": fake_model("gpt", "echo+words=17+cached=4", price=(Decimal("2.5"), Decimal("10"))),
        "odd": fake_model("odd", "echo+words=9", price=(Decimal("0.123456"), Decimal("7.654321"))),
        "mini": fake_model("mini", "echo+words=31+cached=2"),
    }
    price_set(
        model=models["mini"],
        input_per_mtok=Decimal("0.15"),
        output_per_mtok=Decimal("0.6"),
        cached_input_per_mtok=Decimal("0.075"),
        effective_from=timezone.now() - timedelta(days=1),
    )
    for name in ["gpt", "odd", "mini"] * 3:
        assert post(http, name).status_code == 200
        stream_text(http, name, stream_options={"include_usage": True})

    calls = recorded_calls()
    assert len(calls) == 18 and all(c.status == "ok" and not c.usage_estimated for c in calls)
    total = sum(c.cost_usd for c in calls)
    expected = sum(expected_cost(c.model.prices.get(), c) for c in calls)
    assert total == expected  # Decimal equality: exact to the last digit
    mini_stream = next(c for c in calls if c.model.name == "mini" and c.stream)
    assert (mini_stream.prompt_tokens, mini_stream.cached_tokens, mini_stream.completion_tokens) == (12, 2, 31)
    assert mini_stream.cost_usd == (10 * Decimal("0.15") + 2 * Decimal("0.075") + 31 * Decimal("0.6")) / 1_000_000


def test_streamed_usage_from_the_provider_even_when_the_client_did_not_ask(http, fake_model, recorded_calls):
    fake_model("m", "echo+words=12", price=(1, 2))
    body = stream_text(http, "m")
    assert '"usage":{' not in body.replace(" ", "")
    (call,) = recorded_calls()
    assert (call.prompt_tokens, call.completion_tokens, call.usage_estimated) == (12, 12, False)
    assert call.cost_usd == (12 * 1 + 12 * 2) / Decimal(1_000_000)


def test_stream_without_usage_is_estimated_and_flagged(http, fake_model, recorded_calls):
    fake_model("m", "echo+words=10+nousage", price=(1, 2))
    stream_text(http, "m")
    (call,) = recorded_calls()
    text = "Echo: count the costs please lorem ipsum dolor sit amet"
    assert call.usage_estimated
    assert call.prompt_tokens == prompt_tokens_estimate(MESSAGES)
    assert call.completion_tokens == tokens_estimate(text)
    assert call.cost_usd == (call.prompt_tokens * 1 + call.completion_tokens * 2) / Decimal(1_000_000)


def test_client_disconnect_records_tokens_so_far(http, fake_model, fake_upstream, recorded_calls):
    fake_model("m", "echo+words=500+chunk-delay=30", price=(1, 2))
    payload = {"model": "m", "messages": MESSAGES, "stream": True}
    with http.stream("POST", "/v1/chat/completions", json=payload) as response:
        lines = response.iter_lines()
        for _ in range(12):
            next(lines)
    (call,) = recorded_calls()
    assert call.status == "ok" and call.client_disconnected and call.usage_estimated
    assert 0 < call.completion_tokens < 100
    assert call.cost_usd > 0
    assert fake_upstream.app.stats()["cancelled_streams"] == 1


def test_upstream_drop_mid_stream_records_an_error_with_tokens_so_far(http, fake_model, recorded_calls):
    fake_model("m", "echo+words=40+drop=6", price=(1, 2))
    stream_text(http, "m")
    (call,) = recorded_calls()
    assert call.status == "error" and call.usage_estimated
    assert call.completion_tokens == tokens_estimate("Echo: count the costs please lorem")
    assert call.cost_usd == (call.prompt_tokens + 2 * call.completion_tokens) / Decimal(1_000_000)


def test_client_leaving_a_non_streaming_call_records_the_prompt_the_upstream_got(http, fake_model, recorded_calls):
    fake_model("slow", "echo+latency=3000", price=(1, 2))
    with pytest.raises(httpx.ReadTimeout):
        post(http, "slow", timeout=0.3)
    (call,) = recorded_calls()
    assert (call.status, call.http_status, call.client_disconnected, call.model.name) == ("error", 499, True, "slow")
    assert (
        call.usage_estimated and call.prompt_tokens == prompt_tokens_estimate(MESSAGES) and call.completion_tokens == 0
    )
    assert call.cost_usd == call.prompt_tokens * 1 / Decimal(1_000_000)


def test_a_price_change_between_two_calls_gives_each_its_own_price(http, fake_model, recorded_calls):
    model = fake_model("m", "echo+words=10", price=(1, 2))
    post(http, "m")
    first_cost = recorded_calls()[0].cost_usd
    price_set(model=model, input_per_mtok=Decimal("5"), output_per_mtok=Decimal("7"))
    post(http, "m")
    first, second = recorded_calls()
    assert first.cost_usd == first_cost == (12 * 1 + 10 * 2) / Decimal(1_000_000)  # never recomputed
    assert second.cost_usd == (12 * 5 + 10 * 7) / Decimal(1_000_000)


def test_unpriced_model_is_flagged_not_zero(http, fake_model, recorded_calls):
    fake_model("free-lunch", "echo")
    post(http, "free-lunch")
    (call,) = recorded_calls()
    assert call.cost_usd is None and call.unpriced and call.status == "ok"


def test_rows_land_within_a_second_without_flushing(http, fake_model):
    fake_model("m", "echo")
    request_id = post(http, "m").headers["X-Request-Id"]
    deadline = time.monotonic() + 1.0
    while not Call.objects.filter(request_id=request_id).exists():
        assert time.monotonic() < deadline, "the row was not written within one second"
        time.sleep(0.02)


# ---------------------------------------------------------------------------- sync_prices


def test_sync_prices_fills_models_with_real_ids_and_keeps_manual_prices(transactional_db):
    openai = provider_create(name="openai", base_url="https://api.openai.com/v1")
    anthropic = provider_create(name="anthropic", base_url="https://api.anthropic.com/v1")
    model_create(name="gpt-4o", provider=openai)
    model_create(name="claude-sonnet-4", provider=anthropic, upstream_model="claude-sonnet-4-20250514")
    manual = model_create(name="gpt-4o-mini", provider=openai, price=("0.2", "0.8"))
    model_create(name="in-house", provider=provider_create(name="local", base_url="http://127.0.0.1:9/v1"))

    out = io.StringIO()
    call_command("sync_prices", "--dry-run", stdout=out)
    assert Price.objects.count() == 1
    assert (
        "gpt-4o           -                                 2.5 / 10 / 1.25 / -               would be added"
        in out.getvalue()
    )

    call_command("sync_prices", stdout=io.StringIO())
    gpt = Price.objects.get(model__name="gpt-4o")
    assert (gpt.input_per_mtok, gpt.output_per_mtok, gpt.cached_input_per_mtok, gpt.source) == (
        Decimal("2.5"),
        Decimal("10"),
        Decimal("1.25"),
        "genai-prices",
    )
    claude = Price.objects.get(model__name="claude-sonnet-4")
    assert (claude.input_per_mtok, claude.output_per_mtok) == (Decimal("3"), Decimal("15"))
    assert (claude.cached_input_per_mtok, claude.cache_write_per_mtok) == (Decimal("0.3"), Decimal("3.75"))
    assert list(manual.prices.values_list("input_per_mtok", flat=True)) == [Decimal("0.2")]  # manual wins
    assert not Price.objects.filter(model__name="in-house").exists()

    out = io.StringIO()
    call_command("sync_prices", stdout=out)  # idempotent
    assert "0 price(s) changed." in out.getvalue() and Price.objects.count() == 3


def test_sync_prices_adds_a_new_row_when_a_synced_price_changed(transactional_db):
    model = model_create(name="gpt-4o", provider=provider_create(name="openai", base_url="https://api.openai.com/v1"))
    old = price_set(
        model=model,
        input_per_mtok=Decimal("5"),
        output_per_mtok=Decimal("15"),
        source=Price.Source.GENAI_PRICES,
        effective_from=timezone.now() - timedelta(days=30),
    )
    call_command("sync_prices", stdout=io.StringIO())
    assert model.prices.count() == 2
    old.refresh_from_db()
    assert old.input_per_mtok == Decimal("5")
    assert model.prices.latest("effective_from").input_per_mtok == Decimal("2.5")


# ---------------------------------------------------------------------------- budgets


def budget_settled(budget: Budget) -> Budget:
    """The budget once this worker has handed back its allowances (as it does when idle and at shutdown).

    Before that, its reservations are exactly what its allowances still hold.
    """
    budget.refresh_from_db()
    assert budget.reserved_usd == sum(a.amount_usd for a in budget.allowances.all())
    budget_upkeep.return_all()
    budget.refresh_from_db()
    assert not budget.allowances.exists()
    return budget


def test_budget_rejects_with_429_naming_budget_limit_and_spend(http, user, fake_model, recorded_calls):
    fake_model("m", "echo", price=(1000, 1000))
    budget = budget_for(limit="5", spent="4.99", user=user)
    response = post(http, "m", max_tokens=100)
    assert response.status_code == 429
    body = {"model": "m", "messages": MESSAGES, "max_tokens": 100}
    worst = worst_case_usd(body, output_tokens=100, usd_per_mtok=1000)
    assert response.json()["error"] == {
        "message": "Budget exceeded: the monthly budget of user alice is $5.00 and $4.99 is already spent or "
        f"reserved; this call could cost up to ${worst:f}.",
        "type": "insufficient_quota",
        "param": None,
        "code": "budget_exceeded",
    }
    (call,) = recorded_calls()
    assert call.status == "rejected" and call.http_status == 429 and call.error_code == "budget_exceeded"
    budget.refresh_from_db()
    assert budget.reserved_usd == 0 and budget.spent_usd == Decimal("4.99")


def test_budget_reserves_then_settles_to_the_real_cost(http, user, api_key, fake_model, recorded_calls):
    fake_model("m", "echo+words=10", price=(1, 2))
    user_budget = budget_for(limit="1", user=user)
    key_budget = budget_for(limit="1", api_key=ApiKey.objects.get())
    post(http, "m")
    stream_text(http, "m")
    calls = recorded_calls()
    spent = sum(c.cost_usd for c in calls)
    for budget in (user_budget, key_budget):
        budget = budget_settled(budget)
        assert (budget.spent_usd, budget.reserved_usd) == (spent, 0)


def test_reservation_is_released_when_every_candidate_fails(http, user, fake_model, recorded_calls):
    fake_model("down", "echo+status=503", price=(1, 2))
    budget = budget_for(limit="1", user=user)
    assert post(http, "down").status_code == 502
    recorded_calls()
    budget = budget_settled(budget)
    assert (budget.spent_usd, budget.reserved_usd) == (0, 0)


def test_a_refusing_budget_leaves_no_reservation_on_the_others(http, user, api_key, fake_model, recorded_calls):
    fake_model("m", "echo", price=(1000, 1000))
    user_budget = budget_for(limit="100", user=user)
    key_budget = budget_for(limit="0.01", api_key=ApiKey.objects.get())
    response = post(http, "m", max_tokens=100)
    assert response.status_code == 429
    assert response.json()["error"]["message"].startswith("Budget exceeded: the monthly budget of API key ")
    recorded_calls()
    for budget in (user_budget, key_budget):
        budget.refresh_from_db()
        assert (budget.spent_usd, budget.reserved_usd) == (0, 0)
        assert not budget.allowances.exists()


def test_a_budget_from_last_month_starts_the_new_month_empty(http, user, fake_model, recorded_calls):
    fake_model("m", "echo", price=(1, 2))
    budget = budget_for(limit="1", user=user)
    Budget.objects.filter(pk=budget.pk).update(
        spent_usd=Decimal("1"), reserved_usd=Decimal("0.5"), period_start=date(2020, 1, 1)
    )
    assert post(http, "m").status_code == 200
    (call,) = recorded_calls()
    budget = budget_settled(budget)
    assert budget.period_start == period_start_for(timezone.now())
    assert (budget.spent_usd, budget.reserved_usd) == (call.cost_usd, 0)


def test_a_database_that_cannot_reserve_gets_503_and_a_row(
    http, user, fake_model, fake_upstream, recorded_calls, monkeypatch
):
    from django.db import OperationalError

    import billing.budgets

    def database_down(*args, **kwargs):
        raise OperationalError("connection refused")

    monkeypatch.setattr(billing.budgets, "grant_in_transaction", database_down)
    fake_model("m", "echo", price=(1, 2))
    budget_for(limit="1", user=user)
    response = post(http, "m")
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "budget_check_unavailable"
    assert "connection refused" not in response.text  # the cause is logged, not shown
    assert fake_upstream.app.stats()["requests"] == 0  # no call without its reservation
    (call,) = recorded_calls()
    assert (call.status, call.http_status, call.error_code) == ("error", 503, "budget_check_unavailable")


def test_worst_case_uses_the_model_output_cap_when_max_tokens_is_missing(http, user, fake_model):
    fake_model("capped", "echo+words=1", price=(0, 1_000_000), max_output_tokens=10)  # $1 per output token
    budget_for(limit="10.5", user=user)
    assert post(http, "capped").status_code == 200  # worst case 10 × $1, not the default cap


def test_worst_case_uses_the_default_cap_without_any_cap(http, user, fake_model):
    fake_model("uncapped", "echo+words=1", price=(0, 1_000_000))
    budget_for(limit=str(DEFAULT_MAX_OUTPUT_TOKENS - 1), user=user)
    response = post(http, "uncapped")
    assert response.status_code == 429
    assert f"could cost up to ${DEFAULT_MAX_OUTPUT_TOKENS:,}.00." in response.json()["error"]["message"]


def test_concurrent_calls_never_overspend_a_nearly_spent_budget(
    http, gateway, api_key, user, fake_model, recorded_calls
):
    # Billed close to its worst case (a token per byte of text, every allowed output token): a call that
    # settles frees little of what it reserved, so most of the 50 calls must be refused.
    fake_model("m", "echo+dense+words=50+latency=30", price=(1000, 1000))
    worst = worst_case_usd({"model": "m", "messages": MESSAGES, "max_tokens": 50}, output_tokens=50, usd_per_mtok=1000)
    limit = Decimal("10")
    budget = budget_for(limit=str(limit), spent=str(limit - worst * Decimal("3.5")), user=user)
    key_budget = budget_for(limit="1000", api_key=ApiKey.objects.get())  # both granted in one transaction

    def call(_):
        return post(httpx.Client(base_url=gateway.url, headers=http.headers, timeout=30), "m", max_tokens=50)

    with ThreadPoolExecutor(max_workers=50) as pool:
        statuses = [r.status_code for r in pool.map(call, range(50))]
    recorded_calls()
    budget = budget_settled(budget)
    assert statuses.count(200) >= 3 and statuses.count(429) >= 40 and set(statuses) == {200, 429}
    assert budget.reserved_usd == 0
    assert budget.spent_usd <= limit + worst
    spent_by_calls = sum(c.cost_usd for c in Call.objects.filter(status="ok"))
    assert budget.spent_usd == limit - worst * Decimal("3.5") + spent_by_calls
    key_budget = budget_settled(key_budget)
    assert (key_budget.spent_usd, key_budget.reserved_usd) == (spent_by_calls, 0)


# ---------------------------------------------------------------------------- the durable spool


CRASHING_WRITER = """
import os, sys
from pathlib import Path
import django
django.setup()
from billing.recorder import CallRecorder
from django.utils import timezone
recorder = CallRecorder(Path(sys.argv[1]), flush_interval_s=3600, insert=lambda rows, **_: None)
for i in range(5):
    recorder.record({"created_at": timezone.now(), "request_id": f"req_crash_{i}", "requested": "m",
                     "status": "ok", "http_status": 200, "cost_usd": None, "attempts": []})
os._exit(1)  # dies before any insert
"""


def test_rows_spooled_by_a_crashed_process_are_replayed_once(transactional_db, tmp_path, settings):
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "routerweb.settings", "SECRET_KEY": "x"}
    result = subprocess.run([sys.executable, "-c", CRASHING_WRITER, str(tmp_path)], cwd=REPO_ROOT, env=env)
    assert result.returncode == 1
    assert len(list(tmp_path.glob("calls-*.jsonl"))) == 1

    recorder = CallRecorder(tmp_path)
    assert recorder.replay_orphans() == 5
    assert sorted(Call.objects.values_list("request_id", flat=True)) == [f"req_crash_{i}" for i in range(5)]
    assert not list(tmp_path.glob("calls-*.jsonl"))

    (tmp_path / "calls-1-again.jsonl").write_bytes(
        b'{"request_id": "req_crash_0", "created_at": "2026-01-01T00:00:00Z",'
        b' "requested": "m", "status": "ok", "http_status": 200,'
        b' "cost_usd": null, "attempts": []}\n{"torn": '
    )
    assert recorder.replay_orphans() == 2  # the stored row is not doubled; the torn last line is quarantined
    assert Call.objects.count() == 5
    assert list(QuarantinedRow.objects.values_list("request_id", "line")) == [("", '{"torn": ')]
    recorder.stop()  # stops its row writer process


def spool_row(request_id: str) -> dict:
    return {
        "created_at": timezone.now(),
        "request_id": request_id,
        "requested": "m",
        "status": "ok",
        "http_status": 200,
        "cost_usd": None,
        "attempts": [],
    }


def test_a_live_process_spool_is_not_replayed(transactional_db, tmp_path):
    owner = CallRecorder(tmp_path, flush_interval_s=3600, insert=lambda rows, **_: None)
    owner.record(spool_row("req_live"))
    assert CallRecorder(tmp_path).replay_orphans() == 0
    assert not Call.objects.exists()


def test_rows_are_stored_by_the_row_writer_process_and_survive_its_death(transactional_db, tmp_path):
    recorder = CallRecorder(tmp_path, flush_interval_s=0.05)
    recorder.record(spool_row("req_a"))
    recorder.flush()
    first_writer = recorder.row_writer_pid
    assert first_writer not in (None, os.getpid())
    assert list(Call.objects.values_list("request_id", flat=True)) == ["req_a"]

    os.kill(first_writer, signal.SIGKILL)
    recorder.record(spool_row("req_b"))
    recorder.flush()  # the dead writer fails the batch; it is retried with a new one
    recorder.stop()
    assert sorted(Call.objects.values_list("request_id", flat=True)) == ["req_a", "req_b"]
    assert recorder.row_writer_pid is None  # stopped with the recorder
    assert not list(tmp_path.glob("calls-*.jsonl"))


def test_a_spool_removed_by_its_owner_while_being_opened_is_skipped(tmp_path, monkeypatch):
    """Another process's replay can open a spool just before its live owner stores the rows, unlinks
    the file and unlocks it: the lock is then free, but the rows are stored already."""
    import billing.recorder

    spool = tmp_path / "calls-1-stored.jsonl"
    spool.write_bytes(orjson.dumps(spool_row("req_stored"), default=str) + b"\n")
    real_open = os.open

    def open_then_owner_finishes(path, *args):
        fd = real_open(path, *args)
        if path == spool:
            spool.unlink()  # what the owner does once the batch is committed
        return fd

    monkeypatch.setattr(billing.recorder.os, "open", open_then_owner_finishes)
    inserted = []
    recorder = CallRecorder(tmp_path, insert=lambda lines, **_: inserted.extend(lines))
    assert recorder.replay_orphans() == 0
    assert inserted == []


def test_a_batch_that_failed_is_retried_with_a_lookup_of_what_got_stored(tmp_path):
    """A failed insert may have committed all the same (its answer lost): the retry must check."""
    attempts = []

    def flaky_insert(lines, *, may_be_stored):
        attempts.append(([orjson.loads(line)["request_id"] for line in lines], may_be_stored))
        if len(attempts) == 1:
            raise RuntimeError("database unavailable")

    recorder = CallRecorder(tmp_path, flush_interval_s=3600, insert=flaky_insert)
    recorder.record({"request_id": "req_1"})
    assert not recorder.store_pending()  # fails: the row waits in its spool file, now the backlog
    recorder.record({"request_id": "req_2"})
    assert recorder.store_pending()
    recorder.record({"request_id": "req_3"})
    assert recorder.store_pending()
    recorder.stop()
    assert attempts == [(["req_1"], False), (["req_1", "req_2"], True), (["req_3"], False)]
    assert not list(tmp_path.glob("calls-*.jsonl"))  # every spool file removed once its rows were stored


def test_replayed_rows_settle_their_reservation_once(transactional_db, user, tmp_path):
    budget = budget_for(limit="1", user=user)
    Budget.objects.filter(pk=budget.pk).update(reserved_usd=Decimal("0.5"))
    row = {
        "created_at": timezone.now(),
        "request_id": "req_settle",
        "requested": "m",
        "status": "ok",
        "http_status": 200,
        "cost_usd": Decimal("0.1"),
        "attempts": [],
        "user_id": user.id,
        "reservations": [[budget.id, "0.5", period_start_for(timezone.now()).isoformat()]],
    }
    from billing.calls import call_rows_store

    call_rows_store([row])
    call_rows_store([row])  # a replay of the same row
    budget.refresh_from_db()
    assert (budget.spent_usd, budget.reserved_usd) == (Decimal("0.1"), 0)
