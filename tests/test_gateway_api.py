"""The gateway through its real parts: live ASGI server, official openai SDK, fake upstream with faults."""

import asyncio
import time

import httpx
import openai
import orjson
import pytest
from django.utils import timezone

from routing.models import ApiKey, ModelEndpoint
from routing.runtime import runtime_installed
from routing.services import api_key_create
from testkit.live import free_port
from tests.conftest import manage_run
from tests.factories import model_create, provider_create, route_create

HELLO = [{"role": "user", "content": "hello router"}]


def _model(provider, name, upstream):
    return model_create(name=name, provider=provider, upstream_model=upstream)


def chat(http, model, **body):
    return http.post("/v1/chat/completions", json={"model": model, "messages": HELLO, **body})


def sse_payloads(response: httpx.Response) -> list[bytes]:
    return [line[6:] for line in response.read().split(b"\n") if line.startswith(b"data: ")]


# ---------------------------------------------------------------------------- the happy paths


def test_sync_sdk_completion_and_trace_headers(client, fake_model, recorded_calls):
    fake_model("echo-model", "echo+words=5")
    raw = client.chat.completions.with_raw_response.create(model="echo-model", messages=HELLO)
    completion = raw.parse()

    assert completion.choices[0].message.content == "Echo: hello router lorem ipsum"
    assert completion.usage.completion_tokens == 5
    assert raw.headers["X-Router-Model"] == "echo-model"
    assert raw.headers["X-Router-Attempts"] == "1"
    assert raw.headers["X-Request-Id"].startswith("req_")
    assert float(raw.headers["X-Router-Overhead-Ms"]) >= 0
    assert int(raw.headers["Content-Length"]) == len(raw.content)
    (call,) = recorded_calls()
    assert call.request_id == raw.headers["X-Request-Id"]
    assert (call.status, call.requested, call.model.name, call.completion_tokens) == (
        "ok",
        "echo-model",
        "echo-model",
        5,
    )


def test_async_sdk_completion(async_client, fake_model):
    fake_model("echo-model", "echo+words=3")

    async def run():
        return await asyncio.gather(
            *(async_client.chat.completions.create(model="echo-model", messages=HELLO) for _ in range(5))
        )

    results = asyncio.run(run())
    assert [r.choices[0].message.content for r in results] == ["Echo: hello router"] * 5


def test_streaming_chunks_arrive_incrementally(client, fake_model, recorded_calls):
    fake_model("streamer", "echo+words=6+chunk-delay=80")
    arrivals, text = [], []
    stream = client.chat.completions.create(model="streamer", messages=HELLO, stream=True)
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            arrivals.append(time.perf_counter())
            text.append(chunk.choices[0].delta.content)

    assert "".join(text) == "Echo: hello router lorem ipsum dolor"
    gaps = [b - a for a, b in zip(arrivals, arrivals[1:], strict=False)]
    assert len(gaps) == 5 and min(gaps) > 0.05, gaps  # one chunk per upstream chunk, not one burst
    (call,) = recorded_calls()
    assert call.stream and call.ttft_ms is not None and call.completion_tokens == 6 and not call.usage_estimated


def test_usage_chunk_passed_on_only_when_the_client_asks(client, fake_model, fake_upstream):
    fake_model("streamer", "echo+words=3")
    without = list(client.chat.completions.create(model="streamer", messages=HELLO, stream=True))
    assert fake_upstream.app.stats()["last_request"]["stream_options"] == {"include_usage": True}
    assert all(chunk.usage is None for chunk in without)

    with_usage = list(
        client.chat.completions.create(
            model="streamer", messages=HELLO, stream=True, stream_options={"include_usage": True}
        )
    )
    assert with_usage[-1].usage.completion_tokens == 3 and with_usage[-1].choices == []


def test_fields_pass_through_and_model_is_rewritten(http, fake_model, fake_upstream, monkeypatch):
    fake_model("echo-model", "echo+words=2")
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    response = chat(http, "echo-model", temperature=0.3, max_tokens=50, seed=7, tools=tools, stop=["x"], user="u1")
    assert response.status_code == 200
    sent = fake_upstream.app.stats()["last_request"]
    assert sent["model"] == "echo+words=2"
    assert (sent["temperature"], sent["max_tokens"], sent["seed"], sent["tools"], sent["stop"], sent["user"]) == (
        0.3,
        50,
        7,
        tools,
        ["x"],
        "u1",
    )
    assert "fallback_models" not in sent


def test_provider_key_is_read_from_its_variable_at_call_time(
    http, fake_model, fake_provider, fake_upstream, monkeypatch
):
    fake_provider.api_key_env = "FAKE_PROVIDER_API_KEY"
    fake_provider.save()
    fake_model("keyed", "echo")
    monkeypatch.setenv("FAKE_PROVIDER_API_KEY", "sk-provider-canary")
    assert chat(http, "keyed").status_code == 200
    assert fake_upstream.app.stats()["last_headers"]["authorization"] == "Bearer sk-provider-canary"


def test_models_lists_enabled_models_and_routes_the_key_may_use(http, fake_model, user):
    fake_model("a")
    fake_model("b")
    fake_model("off", enabled=False)
    route_create("r", ["a", "b"])
    ids = [m["id"] for m in http.get("/v1/models").json()["data"]]
    assert ids == ["a", "b", "r"]

    key, raw = api_key_create(user=user, name="limited")
    key.allowed_models.add(ModelEndpoint.objects.get(name="a"))
    limited = http.get("/v1/models", headers={"Authorization": f"Bearer {raw}"})
    assert [m["id"] for m in limited.json()["data"]] == ["a"]


def test_sdk_retrieves_one_model_or_route(client, fake_model):
    fake_model("a")
    route_create("r", ["a"])
    assert client.models.retrieve("a").owned_by == "fake"
    assert client.models.retrieve("r").owned_by == "routerweb-route"
    assert [m.id for m in client.models.list()] == ["a", "r"]
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("nope")


# ---------------------------------------------------------------------------- fallback


FALLBACK_CASES = {
    "500": ("echo+status=500", "500 from upstream"),
    "503": ("echo+status=503", "503 from upstream"),
    "429": ("echo+status=429", "429 from upstream"),
    "401": ("echo+status=401", "401 from upstream"),
    "403": ("echo+status=403", "403 from upstream"),
    "malformed": ("echo+malformed", "invalid JSON from upstream"),
    "drop before response": ("echo+drop=0", "connection closed by upstream"),
}


@pytest.mark.parametrize("case", FALLBACK_CASES)
def test_fallback_to_the_next_candidate(case, http, fake_model, recorded_calls):
    upstream, reason = FALLBACK_CASES[case]
    fake_model("bad", upstream)
    fake_model("good", "echo+words=2")
    route_create("r", ["bad", "good"])

    response = chat(http, "r")

    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"] == "Echo: hello"
    assert response.headers["X-Router-Model"] == "good"
    assert response.headers["X-Router-Attempts"] == "2"
    (call,) = recorded_calls()
    assert [(a["model"], a["outcome"]) for a in call.attempts] == [("bad", "error"), ("good", "ok")]
    assert call.attempts[0]["reason"] == reason


@pytest.mark.parametrize("upstream", ["echo+empty-stream", "echo+drop=0", "echo+status=503", "echo+malformed"])
def test_stream_fallback_before_the_first_content_chunk(upstream, client, fake_model):
    fake_model("bad", upstream)
    fake_model("good", "echo+words=3")
    route_create("r", ["bad", "good"])
    raw = client.chat.completions.with_raw_response.create(model="r", messages=HELLO, stream=True)
    text = "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices)
    assert text == "Echo: hello router"
    assert raw.headers["X-Router-Model"] == "good"


def test_fallback_on_read_timeout(http, fake_upstream, fake_model, recorded_calls, transactional_db):
    slow = provider_create(name="slow", base_url=f"{fake_upstream.url}/v1", read_timeout_s=0.3)
    route_create("r", [_model(slow, "hangs", "echo+hang"), fake_model("good", "echo")])
    started = time.perf_counter()
    response = chat(http, "r")
    assert response.status_code == 200 and response.headers["X-Router-Model"] == "good"
    assert time.perf_counter() - started < 3
    assert recorded_calls()[0].attempts[0]["reason"] == "timeout after 0.3s"


def test_fallback_on_connection_refused(http, fake_model, recorded_calls, transactional_db):
    closed = provider_create(name="down", base_url=f"http://127.0.0.1:{free_port()}/v1")
    route_create("r", [_model(closed, "down-model", "echo"), fake_model("good", "echo")])
    response = chat(http, "r")
    assert response.headers["X-Router-Model"] == "good"
    assert recorded_calls()[0].attempts[0]["reason"].startswith("connection failed")


def test_fallback_models_from_the_body_come_after_the_route(http, fake_model):
    fake_model("bad", "echo+status=503")
    fake_model("spare", "echo")
    response = chat(http, "bad", fallback_models=["spare"])
    assert response.status_code == 200 and response.headers["X-Router-Model"] == "spare"


@pytest.mark.parametrize("status", [400, 404, 422])
def test_no_fallback_when_the_request_itself_is_wrong(status, http, fake_model, fake_upstream, recorded_calls):
    fake_model("picky", f"echo+status={status}")
    fake_model("good", "echo")
    route_create("r", ["picky", "good"])
    response = chat(http, "r")
    assert response.status_code == status
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["type"] == "invalid_request_error"
    assert fake_upstream.app.stats()["requests"] == 1
    (call,) = recorded_calls()
    assert call.status == "error" and call.http_status == status


def test_all_candidates_failed_lists_every_attempt(http, fake_model, fake_provider, monkeypatch):
    monkeypatch.delenv("MISSING_API_KEY", raising=False)
    keyed = provider_create(name="keyed", base_url=fake_provider.base_url, api_key_env="MISSING_API_KEY")
    _model(keyed, "needs-key", "echo")
    fake_model("broken", "echo+status=503")
    route_create("r", ["needs-key", "broken"])
    response = chat(http, "r")
    assert response.status_code == 502
    assert response.json()["error"]["message"] == (
        "All candidates failed: needs-key: skipped, MISSING_API_KEY not set; broken: 503 from upstream."
    )
    assert response.json()["error"]["code"] == "all_candidates_failed"
    assert response.headers["X-Router-Attempts"] == "1"


def test_weighted_route_splits_first_picks_by_weight(http, fake_model, recorded_calls):
    fake_model("a", "echo+words=1")
    fake_model("b", "echo+words=1")
    route_create("ab", ["a", "b"], strategy="weighted", weights=[80, 20])
    answered = [chat(http, "ab").headers["X-Router-Model"] for _ in range(300)]
    share_a = answered.count("a") / len(answered)
    assert 0.72 <= share_a <= 0.88, share_a  # 80% ± ~3.5 standard deviations


# ---------------------------------------------------------------------------- circuit breaker


class FakeClock:
    """Wall-clock seconds that move only when a test says so."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def fast_circuit(settings):
    """The in-process server's circuit breaker opens after 3 failures for 1 s, on a fake clock (yielded)."""
    from routing.runtime import runtime_build

    settings.ROUTERWEB_CIRCUIT_FAILURES = 3
    settings.ROUTERWEB_CIRCUIT_OPEN_S = 1.0
    clock = FakeClock()
    runtime = runtime_installed()
    breaker, runtime.breaker = runtime.breaker, runtime_build(clock=clock).breaker
    yield clock
    runtime.breaker = breaker


def test_circuit_opens_half_opens_and_closes(http, fake_model, fast_circuit, recorded_calls):
    flaky = fake_model("flaky", "echo+status=503")
    fake_model("backup", "echo")
    route_create("r", ["flaky", "backup"])

    for _ in range(3):
        assert chat(http, "r").headers["X-Router-Model"] == "backup"
    fourth = chat(http, "r")
    assert fourth.headers["X-Router-Attempts"] == "1"
    calls = recorded_calls()
    assert calls[3].attempts[0]["outcome"] == "skipped"
    assert calls[3].attempts[0]["reason"].startswith("circuit open")

    flaky.upstream_model = "echo"  # the provider recovers
    flaky.save()
    fast_circuit.advance(1.1)
    probe = chat(http, "r")
    assert probe.headers["X-Router-Model"] == "flaky"  # the half-open probe went through and succeeded
    assert chat(http, "r").headers["X-Router-Model"] == "flaky"  # closed again


def test_failed_probe_reopens_the_circuit(http, fake_model, fast_circuit, recorded_calls):
    fake_model("flaky", "echo+status=503")
    fake_model("backup", "echo")
    route_create("r", ["flaky", "backup"])
    for _ in range(3):
        chat(http, "r")
    fast_circuit.advance(1.1)
    chat(http, "r")  # the probe fails
    chat(http, "r")
    calls = recorded_calls()
    assert calls[3].attempts[0]["outcome"] == "error"
    assert calls[4].attempts[0]["reason"].startswith("circuit open")


def test_429_retry_after_sets_the_cooldown(http, fake_model, fast_circuit, recorded_calls):
    fake_model("limited", "echo+status=429+retry-after=30")
    fake_model("backup", "echo")
    route_create("r", ["limited", "backup"])
    chat(http, "r")
    chat(http, "r")
    second = recorded_calls()[1].attempts[0]
    assert second["outcome"] == "skipped" and second["reason"] in (
        "circuit open, retry in 30s",
        "circuit open, retry in 29s",
    )


def test_bad_provider_key_opens_the_provider_circuit(http, fake_model, fake_provider, recorded_calls):
    fake_model("rejected", "echo+status=401")
    fake_model("sibling", "echo")  # same provider: skipped too once its key was rejected
    route_create("first", ["rejected", "sibling"])
    chat(http, "first")
    response = chat(http, "sibling", fallback_models=[])
    assert response.status_code == 502
    assert "provider fake rejected its key" in response.json()["error"]["message"]


def test_two_workers_share_circuit_state(gateway_worker_process, fake_model, api_key, recorded_calls):
    fake_model("flaky", "echo+status=503")
    fake_model("backup", "echo")
    route_create("r", ["flaky", "backup"])
    worker_a = gateway_worker_process(ROUTERWEB_CIRCUIT_FAILURES="3")
    worker_b = gateway_worker_process(ROUTERWEB_CIRCUIT_FAILURES="3")
    headers = {"Authorization": f"Bearer {api_key}"}
    body = {"model": "r", "messages": HELLO}
    for _ in range(3):
        assert httpx.post(f"{worker_a}/v1/chat/completions", json=body, headers=headers).status_code == 200
    on_b = httpx.post(f"{worker_b}/v1/chat/completions", json=body, headers=headers)
    assert on_b.headers["X-Router-Model"] == "backup"
    assert on_b.headers["X-Router-Attempts"] == "1"  # worker B skipped flaky: it saw A's open circuit


def test_a_user_deactivated_in_another_process_is_refused_by_every_worker_within_about_a_second(
    gateway_worker_process, fake_model, api_key, user
):
    """The change is made without Redis (nothing announced): the workers find it in the database's
    registry version, which each reads twice a second."""
    workers = [gateway_worker_process() for _ in range(2)]
    headers = {"Authorization": f"Bearer {api_key}"}
    assert [httpx.get(f"{url}/v1/models", headers=headers).status_code for url in workers] == [200, 200]
    deactivate = "from django.contrib.auth.models import User; u = User.objects.get(username='alice'); "
    deactivate += "u.is_active = False; u.save()"
    manage_run("shell", "-c", deactivate, REDIS_URL="")
    deadline = time.monotonic() + 2.5
    while True:
        statuses = [httpx.get(f"{url}/v1/models", headers=headers).status_code for url in workers]
        if statuses == [401, 401] or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert statuses == [401, 401]


# ---------------------------------------------------------------------------- streaming edge cases


def test_upstream_failure_after_the_first_byte_ends_the_stream_with_an_error_event(http, fake_model, recorded_calls):
    fake_model("dropper", "echo+words=8+drop=3")
    fake_model("good", "echo")
    route_create("r", ["dropper", "good"])
    with http.stream(
        "POST", "/v1/chat/completions", json={"model": "r", "messages": HELLO, "stream": True}
    ) as response:
        payloads = sse_payloads(response)
    assert payloads[-1] == b"[DONE]"
    error = orjson.loads(payloads[-2])["error"]
    assert error["message"].startswith("upstream stream failed") and error["type"] == "server_error"
    words = [orjson.loads(p)["choices"][0]["delta"].get("content") for p in payloads[:-2]]
    assert "".join(w for w in words if w) == "Echo: hello router"
    (call,) = recorded_calls()
    assert call.status == "error" and call.model.name == "dropper" and call.usage_estimated


def test_a_stream_that_breaks_is_an_error_in_the_attempt_chain_too(http, fake_model, recorded_calls):
    fake_model("off", "echo", enabled=False)
    fake_model("dropper", "echo+words=8+drop=3")
    route_create("r", ["off", "dropper"])
    with http.stream(
        "POST", "/v1/chat/completions", json={"model": "r", "messages": HELLO, "stream": True}
    ) as response:
        sse_payloads(response)
        assert response.headers["X-Router-Attempts"] == "1"  # tries: the skip is not one
    (call,) = recorded_calls()
    assert call.status == "error" and call.attempt_count == 1
    skipped, broke = call.attempts
    assert skipped["outcome"] == "skipped"
    assert broke["model"] == "dropper" and broke["outcome"] == "error"
    assert broke["reason"].startswith("stream broke off after 3 chunks")


def test_client_disconnect_closes_the_upstream_stream(http, fake_model, fake_upstream, recorded_calls):
    fake_model("long", "echo+words=200+chunk-delay=50")
    body = {"model": "long", "messages": HELLO, "stream": True}
    with http.stream("POST", "/v1/chat/completions", json=body) as response:
        lines = response.iter_lines()
        received = [next(lines) for _ in range(5)]
    assert any(line.startswith("data: ") for line in received)
    deadline = time.monotonic() + 3
    while fake_upstream.app.stats()["active_streams"] and time.monotonic() < deadline:
        time.sleep(0.02)
    stats = fake_upstream.app.stats()
    assert stats["active_streams"] == 0 and stats["cancelled_streams"] == 1
    (call,) = recorded_calls()
    assert call.client_disconnected and call.status == "ok" and call.usage_estimated


# ---------------------------------------------------------------------------- authentication and bad input


def test_missing_invalid_and_revoked_keys_get_401(gateway, user, fake_model, recorded_calls):
    fake_model("echo-model")
    url = f"{gateway.url}/v1/chat/completions"
    body = {"model": "echo-model", "messages": HELLO}
    assert httpx.post(url, json=body).status_code == 401
    bad = httpx.post(url, json=body, headers={"Authorization": "Bearer rw-not-a-real-key-000000000000"})
    assert bad.status_code == 401 and bad.json()["error"]["code"] == "invalid_api_key"

    key, raw = api_key_create(user=user, name="soon revoked")
    headers = {"Authorization": f"Bearer {raw}"}
    assert httpx.post(url, json=body, headers=headers).status_code == 200
    ApiKey.objects.filter(pk=key.pk).update(revoked_at=timezone.now())
    key.refresh_from_db()
    key.save()  # the admin's save: bumps the registry version
    assert httpx.post(url, json=body, headers=headers).status_code == 401
    assert len(recorded_calls()) == 1  # failed authentication writes nothing


def test_a_deactivated_or_deleted_users_keys_stop_at_once_on_v1_and_the_dashboard(gateway, user, fake_model):
    fake_model("echo-model")
    _, raw = api_key_create(user=user, name="script", reads_dashboard=True)
    headers = {"Authorization": f"Bearer {raw}"}
    chat_body = {"model": "echo-model", "messages": HELLO}
    urls = ("/v1/models", "/dashboard/data.json")
    assert httpx.post(f"{gateway.url}/v1/chat/completions", json=chat_body, headers=headers).status_code == 200
    assert [httpx.get(f"{gateway.url}{url}", headers=headers).status_code for url in urls] == [200, 200]

    user.is_active = False
    user.save()  # the admin's save: bumps the registry version, as a key change does
    refused = httpx.post(f"{gateway.url}/v1/chat/completions", json=chat_body, headers=headers)
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "invalid_api_key"
    assert [httpx.get(f"{gateway.url}{url}", headers=headers).status_code for url in urls] == [401, 401]

    user.is_active = True
    user.save()
    assert httpx.get(f"{gateway.url}/v1/models", headers=headers).status_code == 200
    user.delete()
    assert [httpx.get(f"{gateway.url}{url}", headers=headers).status_code for url in urls] == [401, 401]


def test_a_key_created_by_another_process_works_within_about_a_second(gateway, user, fake_model):
    """`manage.py createapikey` in a shell beside `make run`: its commit bumps the registry version in the
    database, which the server reads twice a second (and with Redis, its token is announced at once)."""
    fake_model("echo-model")
    url = f"{gateway.url}/v1/chat/completions"
    body = {"model": "echo-model", "messages": HELLO}
    assert httpx.post(url, json=body, headers={"Authorization": "Bearer rw-scanner-0"}).status_code == 401
    created = manage_run("createapikey", user.username, "--name", "from a shell")
    headers = {"Authorization": f"Bearer {created.stdout.splitlines()[-1]}"}
    deadline = time.monotonic() + 2.5  # the server reads the version twice a second
    while (status := httpx.post(url, json=body, headers=headers).status_code) != 200:
        assert time.monotonic() < deadline, status
        time.sleep(0.05)
    assert httpx.get(f"{gateway.url}/v1/models", headers=headers).status_code == 200


def test_made_up_keys_never_reload_the_registry(gateway, fake_model, monkeypatch):
    import routing.registry

    loads = []
    registry_load = routing.registry.registry_load
    monkeypatch.setattr(runtime_installed().registry, "_load", lambda: loads.append(1) or registry_load())
    url = f"{gateway.url}/v1/chat/completions"
    for n in range(20):
        headers = {"Authorization": f"Bearer rw-scanner-{n}"}
        assert httpx.post(url, json={"model": "m", "messages": HELLO}, headers=headers).status_code == 401
    # The first load, and at most one more by the once-a-second version watch (if it saw the model this
    # test created only after the first load): 20 misses are no reason to read the database 20 times.
    assert len(loads) <= 2


def test_changes_count_at_once_although_requests_start_from_the_worker_snapshot(
    gateway, user, fake_model, recorded_calls
):
    """The hot path checks the registry version with the circuit state; nothing may act on an old snapshot."""
    fake_model("echo-model")
    url = f"{gateway.url}/v1/chat/completions"
    body = {"model": "echo-model", "messages": HELLO}
    first, raw_first = api_key_create(user=user, name="first")
    assert httpx.post(url, json=body, headers={"Authorization": f"Bearer {raw_first}"}).status_code == 200

    _, raw_new = api_key_create(user=user, name="created after the snapshot")
    new_headers = {"Authorization": f"Bearer {raw_new}"}
    assert httpx.post(url, json=body, headers=new_headers).status_code == 200

    fake_model("new-model")
    new_model = httpx.post(url, json={"model": "new-model", "messages": HELLO}, headers=new_headers)
    assert new_model.status_code == 200 and new_model.headers["X-Router-Model"] == "new-model"

    first.revoked_at = timezone.now()
    first.save()
    assert httpx.post(url, json=body, headers={"Authorization": f"Bearer {raw_first}"}).status_code == 401

    newer = ApiKey.objects.get(name="created after the snapshot")
    newer.revoked_at = timezone.now()
    newer.save()
    bad_body = httpx.post(url, content=b"{nope", headers=new_headers)  # 401, not 400: the key is gone
    assert bad_body.status_code == 401 and bad_body.json()["error"]["code"] == "invalid_api_key"
    assert len(recorded_calls()) == 3  # the three answered calls; the revoked keys wrote nothing


def test_a_failure_inside_routerweb_is_an_openai_500_with_its_row(http, fake_model, recorded_calls, monkeypatch):
    from routing.circuit import CircuitBreaker

    async def broken(self, *args, **kwargs):
        raise RuntimeError("a bug in routerweb")

    fake_model("echo-model")
    assert chat(http, "echo-model").status_code == 200
    monkeypatch.setattr(CircuitBreaker, "read_with", broken)
    monkeypatch.setattr(CircuitBreaker, "read", broken)
    response = http.post("/v1/chat/completions", json={"model": "echo-model", "messages": HELLO})
    assert response.status_code == 500
    assert response.json() == {
        "error": {
            "message": "Internal error in routerweb.",
            "type": "server_error",
            "param": None,
            "code": "internal_error",
        }
    }
    assert response.headers["X-Request-Id"].startswith("req_")
    failed = recorded_calls()[-1]
    assert (failed.status, failed.http_status, failed.error_code) == ("error", 500, "internal_error")


def test_key_limited_to_some_models_gets_403_elsewhere(gateway, user, fake_model):
    allowed = fake_model("allowed")
    fake_model("other")
    key, raw = api_key_create(user=user, name="limited")
    key.allowed_models.add(allowed)
    headers = {"Authorization": f"Bearer {raw}"}
    url = f"{gateway.url}/v1/chat/completions"
    assert httpx.post(url, json={"model": "allowed", "messages": HELLO}, headers=headers).status_code == 200
    denied = httpx.post(url, json={"model": "other", "messages": HELLO}, headers=headers)
    assert denied.status_code == 403 and denied.json()["error"]["code"] == "model_not_allowed"


BAD_BODIES = {
    "not json": (b"{nope", 400, None),
    "not an object": (b"[1, 2]", 400, None),
    "missing messages": (b'{"model": "echo-model"}', 400, "messages"),
    "empty messages": (b'{"model": "echo-model", "messages": []}', 400, "messages"),
    "messages not a list": (b'{"model": "echo-model", "messages": "hi"}', 400, "messages"),
    "bad role": (b'{"model": "echo-model", "messages": [{"role": "robot", "content": "x"}]}', 400, "messages[0].role"),
    "missing model": (b'{"messages": [{"role": "user", "content": "x"}]}', 400, "model"),
    "stream not bool": (
        b'{"model": "echo-model", "messages": [{"role": "user", "content": "x"}], "stream": "yes"}',
        400,
        "stream",
    ),
    "temperature not number": (
        b'{"model": "echo-model", "messages": [{"role": "user", "content": "x"}], "temperature": "hot"}',
        400,
        "temperature",
    ),
    "unknown model": (b'{"model": "nope", "messages": [{"role": "user", "content": "x"}]}', 404, "model"),
    "unknown fallback": (
        b'{"model": "echo-model", "messages": [{"role": "user", "content": "x"}], "fallback_models": ["nope"]}',
        404,
        "fallback_models",
    ),
}


@pytest.mark.parametrize("case", BAD_BODIES)
def test_bad_input_gets_an_openai_error(case, http, fake_model, recorded_calls):
    fake_model("echo-model")
    body, status, param = BAD_BODIES[case]
    response = http.post("/v1/chat/completions", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    assert error["param"] == param
    if status == 404:
        assert error["code"] == "model_not_found"
    (call,) = recorded_calls()
    assert call.status == "rejected" and call.http_status == status


def test_body_over_the_limit_gets_413(http, fake_model):
    fake_model("echo-model")
    big = {"model": "echo-model", "messages": [{"role": "user", "content": "x" * (5 * 1024 * 1024)}]}
    response = chat(http, "echo-model", messages=big["messages"])
    assert response.status_code == 413 and response.json()["error"]["code"] == "body_too_large"


def test_sdk_raises_typed_errors(client, fake_model):
    fake_model("echo-model")
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="nope", messages=HELLO)
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="echo-model", messages=[])


def test_unknown_paths_and_methods_answer_json(http):
    assert http.get("/v1/chat/completions").status_code == 405
    assert http.get("/v1/embeddings").status_code == 405
    missing = http.get("/v1/audio/speech")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"


# ---------------------------------------------------------------------------- the page stack's protections


@pytest.mark.parametrize("path", ["/v1/models", "/v1/chat/completions", "/v1/no-such-path"])
def test_a_host_outside_allowed_hosts_gets_an_openai_400(http, path):
    response = http.request(
        "GET" if "models" in path else "POST", path, headers={"Host": "evil.example"}, json={"model": "x"}
    )
    assert response.status_code == 400
    assert response.json()["error"] == {
        "message": "Invalid Host header.",
        "type": "invalid_request_error",
        "param": None,
        "code": "invalid_host",
    }
    assert response.headers["X-Content-Type-Options"] == "nosniff"


def test_every_api_response_says_nosniff(gateway, http, fake_model):
    fake_model("echo-model")
    answers = [
        http.get("/v1/models"),
        http.get("/v1/models/nope"),
        httpx.get(f"{gateway.url}/v1/models"),
        chat(http, "echo-model"),
        http.post("/v1/chat/completions", json={"model": "echo-model", "messages": HELLO, "stream": True}),
    ]
    assert [a.status_code for a in answers] == [200, 404, 401, 200, 200]
    assert {a.headers["X-Content-Type-Options"] for a in answers} == {"nosniff"}
