"""Metrics, health checks and the call log line (issue 18), on the in-process server and on real worker
processes sharing one metrics directory."""

import json
import logging
import secrets

import httpx

from billing.models import Call
from routerweb.log_format import JsonFormatter
from routing.metrics import error_class
from tests.metrics_helpers import HELLO, metric_value, scrape

TOKEN = "metrics-token-for-tests"


def _name(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(3)}"


# ---------------------------------------------------------------------------- /metrics access


def test_metrics_are_off_without_a_token_or_a_staff_session(gateway, settings):
    settings.ROUTERWEB_METRICS_TOKEN = ""
    assert httpx.get(f"{gateway.url}/metrics").status_code == 404


def test_metrics_want_the_configured_bearer_token(gateway, settings):
    settings.ROUTERWEB_METRICS_TOKEN = TOKEN
    assert httpx.get(f"{gateway.url}/metrics").status_code == 401
    wrong = httpx.get(f"{gateway.url}/metrics", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    right = httpx.get(f"{gateway.url}/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert right.status_code == 200
    assert right.headers["Content-Type"].startswith("text/plain")
    assert "routerweb_requests_total" in right.text or "# TYPE routerweb_requests counter" in right.text


def test_a_staff_session_reads_the_metrics(gateway, settings, admin_user):
    settings.ROUTERWEB_METRICS_TOKEN = ""
    with httpx.Client(base_url=gateway.url) as browser:
        page = browser.get("/accounts/login/")
        csrf = browser.cookies["csrftoken"]
        browser.post(
            "/accounts/login/",
            data={"username": "admin", "password": "password", "csrfmiddlewaretoken": csrf},
            headers={"Referer": f"{gateway.url}/accounts/login/"},
        )
        assert page.status_code == 200
        assert browser.get("/metrics").status_code == 200


# ---------------------------------------------------------------------------- what is counted


def test_calls_fallbacks_failures_tokens_and_cost_are_counted(gateway, http, fake_model, settings, recorded_calls):
    settings.ROUTERWEB_METRICS_TOKEN = TOKEN
    good, bad = _name("obs-good"), _name("obs-bad")
    fake_model(good, "echo+words=4", price=(1, 2))
    fake_model(bad, "echo+status=503")
    assert http.post("/v1/chat/completions", json={"model": good, "messages": HELLO}).status_code == 200
    fallback = {"model": bad, "messages": HELLO, "fallback_models": [good]}
    assert http.post("/v1/chat/completions", json=fallback).status_code == 200
    refused = http.post("/v1/chat/completions", json={"model": _name("obs-unknown"), "messages": HELLO})
    assert refused.status_code == 404

    families = scrape(gateway.url, TOKEN)
    assert metric_value(families, "routerweb_requests_total", model=good, route=good, status="200", outcome="ok") == 1
    assert metric_value(families, "routerweb_requests_total", model=good, route=bad, status="200", outcome="ok") == 1
    assert metric_value(families, "routerweb_upstream_attempts_total", model=bad, result="error") == 1
    assert metric_value(families, "routerweb_upstream_failures_total", model=bad, error_class="http_503") == 1
    assert metric_value(families, "routerweb_fallbacks_total", model=good) == 1
    assert metric_value(families, "routerweb_tokens_total", model=good, kind="completion") == 8
    assert metric_value(families, "routerweb_request_latency_seconds_count", model=good) == 2
    # 2 calls, each 4 completion tokens at $2/Mtok and the prompt at $1/Mtok: the rows hold the exact sum.
    rows = [call for call in recorded_calls() if call.model and call.model.name == good]
    assert len(rows) == 2
    exact = sum(float(call.cost_usd) for call in rows)
    assert abs(metric_value(families, "routerweb_cost_usd_total", model=good) - exact) < 1e-12
    assert metric_value(families, "routerweb_requests_total", model="", route="", status="404", outcome="rejected") >= 1
    assert metric_value(families, "routerweb_circuit_open", model=bad) in (0.0, 1.0)
    assert metric_value(families, "routerweb_quarantined_rows") == 0


def test_a_stream_observes_its_time_to_first_token(gateway, http, fake_model, settings):
    settings.ROUTERWEB_METRICS_TOKEN = TOKEN
    name = _name("obs-stream")
    fake_model(name, "echo+words=4+latency=20")
    with http.stream("POST", "/v1/chat/completions", json={"model": name, "messages": HELLO, "stream": True}) as r:
        assert r.status_code == 200
        r.read()
    from tests.conftest import calls_settle

    calls_settle()
    families = scrape(gateway.url, TOKEN)
    assert metric_value(families, "routerweb_time_to_first_token_seconds_count", model=name) == 1
    assert metric_value(families, "routerweb_time_to_first_token_seconds_sum", model=name) >= 0.02
    assert metric_value(families, "routerweb_time_to_first_token_seconds_bucket", model=name, le="0.01") == 0
    assert metric_value(families, "routerweb_tokens_total", model=name, kind="completion") == 4


def test_the_recorder_gauges_are_exported(gateway, http, fake_model, settings):
    settings.ROUTERWEB_METRICS_TOKEN = TOKEN
    families = scrape(gateway.url, TOKEN, wait_refresh=True)
    assert metric_value(families, "routerweb_recorder_alive") == 1
    assert metric_value(families, "routerweb_recorder_backlog_rows") >= 0
    assert metric_value(families, "routerweb_recorder_spool_bytes") >= 0
    assert metric_value(families, "routerweb_calls_in_flight") >= 0


def test_error_classes_are_bounded_labels():
    assert error_class({"status": 429, "reason": "rate limited"}) == "http_429"
    assert error_class({"status": None, "reason": "timeout after 5s"}) == "timeout"
    assert error_class({"status": None, "reason": "connect timeout after 2s"}) == "connect_timeout"
    assert error_class({"status": None, "reason": "something new and odd"}) == "other"


# ---------------------------------------------------------------------------- health checks


def test_healthz_and_readyz_answer_and_write_no_row(gateway, settings):
    before = Call.objects.count()
    health = httpx.get(f"{gateway.url}/healthz")
    assert health.status_code == 200 and health.json() == {"status": "ok"}
    ready = httpx.get(f"{gateway.url}/readyz")
    assert ready.status_code == 200, ready.text
    detail = ready.json()
    assert detail["status"] == "ready"
    assert detail["checks"]["database"] is True and detail["checks"]["recorder"] is True
    if settings.REDIS_URL:
        assert detail["checks"]["redis"] is True
    assert Call.objects.count() == before


def test_health_checks_and_metrics_are_not_redirected_to_https(settings, rf):
    from django.http import HttpResponse
    from django.middleware.security import SecurityMiddleware

    settings.SECURE_SSL_REDIRECT = True
    middleware = SecurityMiddleware(lambda request: HttpResponse("ok"))
    for path in ("/healthz", "/readyz", "/metrics"):
        assert middleware(rf.get(path)).status_code == 200, path
    assert middleware(rf.get("/accounts/login/")).status_code == 301


def test_readyz_is_503_when_the_recorder_is_not_running(gateway, monkeypatch):
    from billing.metering import BillingMeter

    monkeypatch.setattr(BillingMeter, "ready", lambda self: {"recorder": False})
    ready = httpx.get(f"{gateway.url}/readyz")
    assert ready.status_code == 503
    assert ready.json()["checks"]["recorder"] is False


# ---------------------------------------------------------------------------- the call log line


def test_one_log_line_per_call_without_the_prompt(gateway, http, api_key, fake_model, caplog):
    name = _name("obs-log")
    fake_model(name, "echo+words=3", price=(1, 2))
    with caplog.at_level(logging.INFO, logger="routerweb.calls"):
        response = http.post("/v1/chat/completions", json={"model": name, "messages": HELLO})
        from tests.conftest import calls_settle

        calls_settle()
    lines = [r for r in caplog.records if r.name == "routerweb.calls"]
    assert len(lines) == 1
    call = lines[0].call
    assert call["request_id"] == response.headers["X-Request-Id"]
    assert call["key_prefix"] and api_key.startswith(call["key_prefix"])
    assert (call["requested_model"], call["model"], call["attempts"], call["status"]) == (name, name, 1, "ok")
    assert call["latency_ms"] >= 0 and call["overhead_ms"] >= 0 and call["cost_usd"] > 0
    line = JsonFormatter().format(lines[0])
    assert json.loads(line)["request_id"] == call["request_id"]
    assert "hello router" not in line and api_key not in line


def test_the_prompt_is_logged_only_when_an_operator_turns_it_on(gateway, http, fake_model, caplog):
    from routing.runtime import runtime_installed

    name = _name("obs-content")
    fake_model(name, "echo")
    runtime = runtime_installed()
    runtime.log_content = True
    try:
        with caplog.at_level(logging.INFO, logger="routerweb.calls"):
            http.post("/v1/chat/completions", json={"model": name, "messages": HELLO})
            from tests.conftest import calls_settle

            calls_settle()
    finally:
        runtime.log_content = False
    (line,) = [r for r in caplog.records if r.name == "routerweb.calls"]
    assert "hello router" in JsonFormatter().format(line)


# ---------------------------------------------------------------------------- several processes


def test_the_metrics_add_up_the_workers_of_a_machine(gateway_worker_process, api_key, fake_model, tmp_path):
    from routerweb.serve import metrics_dir_reset

    name = _name("obs-multi")
    fake_model(name, "echo+words=2")
    metrics_dir_reset(tmp_path / "metrics")
    env = {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics"), "ROUTERWEB_METRICS_TOKEN": TOKEN}
    urls = [gateway_worker_process(**env), gateway_worker_process(**env)]
    for index in range(6):
        with httpx.Client(base_url=urls[index % 2], headers={"Authorization": f"Bearer {api_key}"}) as http:
            assert http.post("/v1/chat/completions", json={"model": name, "messages": HELLO}).status_code == 200
    for url in urls:  # whichever worker answers the scrape, it adds both up
        families = scrape(url, TOKEN, wait_refresh=True)  # the other worker flushes its counts once a second
        ok = {"model": name, "route": name, "status": "200", "outcome": "ok"}
        assert metric_value(families, "routerweb_requests_total", **ok) == 6
        assert metric_value(families, "routerweb_tokens_total", model=name, kind="completion") == 12
