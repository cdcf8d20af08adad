"""The playground's session endpoints: login and CSRF required, the API's error shapes, call rows, traces, votes.

Chats go through the live server (routerweb's full ASGI app) to the fake upstream; the login and CSRF
checks also use Django's test client, with `enforce_csrf_checks=True` where CSRF is the point.
"""

import asyncio
import io
import re
import threading
from decimal import Decimal

import httpx
import orjson
import pytest
from django.core.management import call_command
from django.test import Client

from billing.models import Call
from routing import gateway
from routing.models import PreferenceVote
from routing.playground import attempt_text, default_choice, playground_choices, tokens_per_second
from routing.registry import registry_load
from routing.router import RouteResult
from tests.factories import model_create, provider_create, route_create, user_create

HELLO = [{"role": "user", "content": "hello playground"}]
CHAT_URL = "/playground/api/chat"
VOTES_URL = "/playground/api/votes"


@pytest.fixture
def session(login, user) -> httpx.Client:
    return login("alice", "pw-alice-123")


def play(http: httpx.Client, model: str, **body) -> httpx.Response:
    return http.post(CHAT_URL, json={"model": model, "messages": HELLO, **body})


def sse_payloads(response: httpx.Response) -> list[bytes]:
    return [line[6:] for line in response.read().split(b"\n") if line.startswith(b"data: ")]


def assert_openai_error(response, status: int, code: str, type_: str) -> dict:
    assert response.status_code == status, response.content
    assert response.headers["Content-Type"] == "application/json"
    body = orjson.loads(response.content)
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    assert (body["error"]["code"], body["error"]["type"]) == (code, type_)
    assert body["error"]["message"]
    return body["error"]


# ---------------------------------------------------------------------------- login and CSRF


def test_page_requires_login(transactional_db):
    response = Client().get("/playground/")
    assert response.status_code == 302
    assert response.headers["Location"] == "/accounts/login/?next=/playground/"


@pytest.mark.parametrize(
    ("method", "url"),
    [("post", CHAT_URL), ("get", "/playground/api/calls/req_123"), ("post", VOTES_URL)],
)
def test_endpoints_answer_401_without_a_session(transactional_db, method, url):
    client = Client()
    response = client.get(url) if method == "get" else client.post(url, data=b"{}", content_type="application/json")
    error = assert_openai_error(response, 401, "login_required", "authentication_error")
    assert "log in" in error["message"]


@pytest.mark.parametrize("url", [CHAT_URL, VOTES_URL])
def test_posts_without_csrf_token_answer_403_json(user, url):
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    body = orjson.dumps({"model": "anything", "messages": HELLO})
    response = client.post(url, data=body, content_type="application/json")
    error = assert_openai_error(response, 403, "csrf_failed", "permission_error")
    assert "CSRF" in error["message"]
    assert not Call.objects.exists()


def test_csrf_failures_elsewhere_keep_djangos_page(user):
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    response = client.post("/accounts/logout/")
    assert response.status_code == 403 and response["Content-Type"].startswith("text/html")


def test_live_server_enforces_csrf_and_accepts_the_pages_token(session, fake_model):
    fake_model("echo-model", "echo+words=3")
    token = session.headers.pop("X-CSRFToken")
    assert_openai_error(play(session, "echo-model"), 403, "csrf_failed", "permission_error")
    session.headers["X-CSRFToken"] = token
    assert play(session, "echo-model").status_code == 200


def test_wrong_method_answers_405_json(session):
    assert_openai_error(session.get(CHAT_URL), 405, "method_not_allowed", "invalid_request_error")
    assert_openai_error(session.get(VOTES_URL), 405, "method_not_allowed", "invalid_request_error")


# ---------------------------------------------------------------------------- same code path as /v1/


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        orjson.dumps({"messages": HELLO}),
        orjson.dumps({"model": "echo-model", "messages": HELLO, "temperature": "hot"}),
        orjson.dumps({"model": "no-such-model", "messages": HELLO}),
        orjson.dumps({"model": "echo-model", "messages": HELLO, "fallback_models": ["nope"]}),
        orjson.dumps({"model": "broken", "messages": HELLO}),
    ],
    ids=["invalid-json", "no-model", "bad-temperature", "unknown-model", "unknown-fallback", "all-failed"],
)
def test_errors_have_the_same_status_and_shape_as_the_api(session, gateway, api_key, fake_model, body):
    fake_model("echo-model", "echo")
    fake_model("broken", "echo+status=503")
    headers = {"Content-Type": "application/json"}
    api = httpx.post(
        f"{gateway.url}/v1/chat/completions", content=body, headers={**headers, "Authorization": f"Bearer {api_key}"}
    )
    playground = session.post(CHAT_URL, content=body, headers=headers)

    assert playground.status_code == api.status_code >= 400
    assert orjson.loads(playground.content) == orjson.loads(api.content)
    assert playground.headers["X-Request-Id"].startswith("req_")


def test_stream_is_relayed_and_recorded_for_the_user(session, fake_model, user, recorded_calls):
    fake_model("streamer", "echo+words=5+chunk-delay=20")
    with session.stream("POST", CHAT_URL, json={"model": "streamer", "messages": HELLO, "stream": True}) as response:
        assert response.status_code == 200
        assert response.headers["Content-Type"] == "text/event-stream"
        assert response.headers["X-Router-Model"] == "streamer"
        request_id = response.headers["X-Request-Id"]
        payloads = sse_payloads(response)

    assert payloads[-1] == b"[DONE]"
    deltas = [orjson.loads(p)["choices"] for p in payloads[:-1]]
    text = "".join(c[0]["delta"].get("content") or "" for c in deltas if c)
    assert text == "Echo: hello playground lorem ipsum"
    (call,) = recorded_calls()
    assert (call.request_id, call.source, call.user_id, call.api_key_id) == (request_id, "playground", user.id, None)
    assert (call.status, call.stream, call.completion_tokens, call.client_disconnected) == ("ok", True, 5, False)


def test_non_stream_answer_is_recorded_for_the_user(session, fake_model, user, recorded_calls):
    fake_model("echo-model", "echo+words=4", price=(1, 2))
    response = play(session, "echo-model", temperature=0.2, max_tokens=50)

    assert response.status_code == 200
    assert response.json()["choices"][0]["message"]["content"] == "Echo: hello playground lorem"
    (call,) = recorded_calls()
    assert (call.source, call.user_id, call.stream, call.status) == ("playground", user.id, False, "ok")
    assert (call.prompt_tokens, call.completion_tokens) == (5, 4)
    assert call.cost_usd == Decimal("0.000013")


def test_client_leaving_mid_stream_is_recorded(session, fake_model, recorded_calls):
    fake_model("slow", "echo+words=50+chunk-delay=50")
    with session.stream("POST", CHAT_URL, json={"model": "slow", "messages": HELLO, "stream": True}) as response:
        next(response.iter_raw())
    (call,) = recorded_calls()
    assert call.client_disconnected and call.source == "playground"
    assert 0 < call.completion_tokens < 50 and call.usage_estimated


def test_a_stream_django_stops_iterating_is_closed_from_its_sync_close(monkeypatch):
    """When the client leaves while a chunk is being sent, Django only calls the response's sync close(),
    from a worker thread: the stream must still be closed (and its call recorded once), on its own loop."""
    closed_on, recorded = [], []

    class Relay:  # the StreamRelay interface RecordedStream uses
        usage, text_chars, first_content_at, failure = None, 0, None, None

        async def __aiter__(self):
            while True:
                yield b"data: {}\n\n"

        async def aclose(self) -> None:
            closed_on.append(threading.current_thread())

    monkeypatch.setattr(gateway, "_record", lambda *args, **kwargs: recorded.append(kwargs))
    loop = asyncio.new_event_loop()
    loop_thread = threading.Thread(target=loop.run_forever, daemon=True)
    loop_thread.start()

    async def open_and_read_one_chunk() -> gateway.RecordedStream:
        result = RouteResult(model=None, stream=Relay())
        stream = gateway.RecordedStream(gateway.CallContext(source="playground"), None, result)
        await anext(stream)
        return stream

    try:
        stream = asyncio.run_coroutine_threadsafe(open_and_read_one_chunk(), loop).result(timeout=5)
        stream.close()
        stream.close()
        asyncio.run_coroutine_threadsafe(asyncio.sleep(0.05), loop).result(timeout=5)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        loop_thread.join(timeout=5)
        loop.close()
    assert closed_on == [loop_thread]
    assert len(recorded) == 1 and recorded[0]["client_disconnected"]


# ---------------------------------------------------------------------------- the recorded call


def test_call_detail_shows_the_trace_of_own_calls_only(session, login, fake_model, recorded_calls):
    fake_model("down", "echo+status=503")
    fake_model("up", "echo+words=6+chunk-delay=10", price=(1, 2))
    route_create("smart", ["down", "up"])
    with session.stream("POST", CHAT_URL, json={"model": "smart", "messages": HELLO, "stream": True}) as response:
        request_id = response.headers["X-Request-Id"]
        response.read()
    (call,) = recorded_calls()

    detail = session.get(f"/playground/api/calls/{request_id}").json()
    assert {k: detail[k] for k in ("request_id", "requested", "model", "provider", "status")} == {
        "request_id": request_id,
        "requested": "smart",
        "model": "up",
        "provider": "fake",
        "status": "ok",
    }
    assert (detail["prompt_tokens"], detail["completion_tokens"], detail["usage_estimated"]) == (5, 6, False)
    assert Decimal(detail["cost_usd"]) == call.cost_usd == Decimal("0.000017")
    assert (detail["latency_ms"], detail["ttft_ms"]) == (call.latency_ms, call.ttft_ms)
    assert detail["tokens_per_second"] > 0
    texts = [a["text"] for a in detail["attempts"]]
    assert re.fullmatch(r"down: 503 from upstream after \d+ ms", texts[0]), texts
    assert re.fullmatch(r"up: ok after \d+ ms", texts[1]), texts

    user_create("bob", password="pw-bob-12345")
    bob = login("bob", "pw-bob-12345")
    assert_openai_error(bob.get(f"/playground/api/calls/{request_id}"), 404, "call_not_found", "invalid_request_error")
    assert_openai_error(session.get("/playground/api/calls/req_nope"), 404, "call_not_found", "invalid_request_error")


def test_attempt_text_and_tokens_per_second():
    assert attempt_text({"model": "gpt-4o", "outcome": "skipped", "reason": "OPENAI_API_KEY not set"}) == (
        "gpt-4o: skipped, OPENAI_API_KEY not set"
    )
    error = {"model": "claude-sonnet-4", "outcome": "error", "status": 503, "latency_ms": 120}
    assert attempt_text({**error, "reason": "503 from upstream"}) == "claude-sonnet-4: 503 from upstream after 120 ms"
    assert tokens_per_second(completion_tokens=30, latency_ms=1600, ttft_ms=100, stream=True) == 20.0
    assert tokens_per_second(completion_tokens=30, latency_ms=1500, ttft_ms=None, stream=True) == 20.0
    assert tokens_per_second(completion_tokens=0, latency_ms=1500, ttft_ms=None, stream=True) is None
    assert tokens_per_second(completion_tokens=5, latency_ms=0, ttft_ms=None, stream=False) is None
    # An answer sent whole: its "first token" came with the last one; the speed is over the whole call,
    # not 10 tokens in the 1 ms between (which read "10000 tok/s").
    assert tokens_per_second(completion_tokens=10, latency_ms=1001, ttft_ms=1000, stream=False) == 10.0


def test_call_detail_with_wait_answers_202_while_the_row_is_not_recorded(session):
    response = session.get("/playground/api/calls/req_0123?wait=0.2")
    assert response.status_code == 202 and response.json() == {"request_id": "req_0123", "recorded": False}
    bad = session.get("/playground/api/calls/req_0123?wait=60")
    assert_openai_error(bad, 400, "invalid_value", "invalid_request_error")


def test_call_detail_with_wait_returns_the_row_once_it_lands(session, fake_model, recorded_calls):
    fake_model("m", "echo", price=(1, 2))
    request_id = play(session, "m").headers["X-Request-Id"]
    response = session.get(f"/playground/api/calls/{request_id}?wait=5")  # asked at once: the row is not there yet
    assert response.status_code == 200 and response.json()["request_id"] == request_id


# ---------------------------------------------------------------------------- the model picker


def test_the_picker_marks_unavailable_candidates_and_defaults_to_a_target_that_can_answer(
    transactional_db, fake_provider, monkeypatch, settings
):
    settings.ROUTERWEB_DEMO_PROVIDER = True
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    openai = provider_create(name="openai", base_url=fake_provider.base_url, api_key_env="OPENAI_API_KEY")
    ollama = provider_create(name="ollama", base_url="http://127.0.0.1:9/v1")
    demo = provider_create(name="demo", base_url="http://127.0.0.1:8000/demo/v1")
    model_create(name="gpt-4o", provider=openai)
    model_create(name="llama3.2", provider=ollama)
    model_create(name="demo-echo", provider=demo)
    model_create(name="off", provider=demo, enabled=False)
    route_create("cheap", ["llama3.2", "gpt-4o", "demo-echo"])
    route_create("paid", ["gpt-4o", "off"])
    route_create("default", ["gpt-4o", "demo-echo"])
    groups = playground_choices(registry=registry_load(), circuit_reasons={"demo-echo": "circuit open, retry in 9s"})
    choices = {c.name: c for g in groups for c in g.choices}
    assert choices["paid"].usable is False and choices["paid"].reason == "no candidate can answer"
    assert choices["paid"].note == "no candidate can answer: gpt-4o (OPENAI_API_KEY not set); off (disabled)"
    assert choices["gpt-4o"].reason == "OPENAI_API_KEY not set"
    assert choices["demo-echo"].reason == "circuit open, retry in 9s"
    # A keyless local server (Ollama) may not be running: a route starting with it is not the default.
    assert default_choice(playground_choices(registry=registry_load())) == "default"
    settings.ROUTERWEB_DEMO_PROVIDER = False
    groups = playground_choices(registry=registry_load())
    choices = {c.name: c for g in groups for c in g.choices}
    assert choices["demo-echo"].reason == "the demo provider is off (ROUTERWEB_DEMO_PROVIDER)"
    assert default_choice(groups) == "cheap"  # nothing dependable left: the first usable one


def test_the_page_shows_the_reason_in_the_picker(session, fake_model):
    fake_model("off", "echo", enabled=False)
    fake_model("on", "echo")
    page = session.get("/playground/").text
    assert "off · unavailable: disabled</option>" in page
    assert re.search(r'<option value="on"[^>]*selected', page)


# ---------------------------------------------------------------------------- compare-mode votes


def test_votes_are_stored_per_answering_model_and_can_be_changed(session, fake_model, recorded_calls):
    first = fake_model("model-a", "echo+words=3")
    second = fake_model("model-b", "echo+words=4")
    route_create("fast", [first])
    ids = [play(session, name).headers["X-Request-Id"] for name in ("fast", "model-b")]
    recorded_calls()

    response = session.post(VOTES_URL, json={"compared": ["fast", "model-b"], "request_ids": ids, "chosen": "fast"})
    assert response.status_code == 201, response.text
    assert response.json()["chosen_model"] == "model-a"
    (vote,) = PreferenceVote.objects.all()
    assert (vote.compared, vote.request_ids, vote.chosen, vote.chosen_model) == (
        ["fast", "model-b"],
        ids,
        "fast",
        first,
    )
    assert vote.user.username == "alice"

    response = session.post(VOTES_URL, json={"compared": ["fast", "model-b"], "request_ids": ids, "chosen": "model-b"})
    assert response.status_code == 200, response.text
    (vote,) = PreferenceVote.objects.all()
    assert (vote.chosen, vote.chosen_model) == ("model-b", second)


def _call(user, request_id: str, requested: str, *, model=None, status: str = "ok") -> Call:
    return Call.objects.create(
        request_id=request_id,
        user=user,
        requested=requested,
        model=model,
        status=status,
        http_status=200 if status == "ok" else 502,
        source="playground",
    )


@pytest.mark.parametrize(
    ("body", "param", "words"),
    [
        (b"[1, 2", None, "not valid JSON"),
        ({"compared": ["a"], "request_ids": ["r1"], "chosen": "a"}, "compared", "2 to 4 different"),
        ({"compared": list("abcde"), "request_ids": ["r1"] * 5, "chosen": "a"}, "compared", "2 to 4 different"),
        ({"compared": ["a", "a"], "request_ids": ["r1", "r2"], "chosen": "a"}, "compared", "2 to 4 different"),
        ({"compared": ["a", "b"], "request_ids": ["r1"], "chosen": "a"}, "request_ids", "each compared column"),
        ({"compared": ["a", "b"], "request_ids": ["r1", "r2"], "chosen": "c"}, "chosen", "one of the compared"),
        ({"compared": ["a", "b"], "request_ids": ["r1", "r-bob"], "chosen": "a"}, "request_ids", "'r-bob' is not"),
        ({"compared": ["b", "a"], "request_ids": ["r1", "r2"], "chosen": "a"}, "request_ids", "not one of your"),
        ({"compared": ["a", "b"], "request_ids": ["r1", "r-failed"], "chosen": "b"}, "chosen", "did not answer"),
    ],
    ids=["not-json", "one", "five", "duplicate", "ids-length", "chosen", "other-user", "wrong-name", "failed"],
)
def test_bad_votes_are_refused_with_400(user, fake_model, body, param, words):
    model = fake_model("a", "echo")
    _call(user, "r1", "a", model=model)
    _call(user, "r2", "b", model=model)
    _call(user, "r-failed", "b", status="error")
    _call(user_create("bob"), "r-bob", "b", model=model)
    client = Client()
    client.force_login(user)

    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    response = client.post(VOTES_URL, data=raw, content_type="application/json")

    code = "invalid_json" if param is None else "invalid_value"
    error = assert_openai_error(response, 400, code, "invalid_request_error")
    assert error["param"] == param and words in error["message"]
    assert not PreferenceVote.objects.exists()


def test_votes_are_listed_in_the_admin(admin_user, user, fake_model):
    model = fake_model("a", "echo")
    _call(user, "r1", "a", model=model)
    PreferenceVote.objects.create(
        user=user, compared=["a", "b"], chosen="a", chosen_model=model, request_ids=["r1", "r2"], comparison_key="r1,r2"
    )
    client = Client()
    client.force_login(admin_user)
    response = client.get("/admin/routing/preferencevote/")
    assert response.status_code == 200 and b"a vs b" in response.content


def test_a_nul_model_name_in_the_playground_is_a_400_with_its_row_and_later_calls_work(
    session, fake_model, recorded_calls
):
    fake_model("echo-1", "echo+words=3", price=(1, 2))
    assert_openai_error(play(session, "bad\u0000name"), 400, "invalid_value", "invalid_request_error")
    assert play(session, "echo-1").status_code == 200
    rejected, answered = recorded_calls()
    assert (rejected.requested, rejected.status, rejected.source) == ("", "rejected", "playground")
    assert answered.status == "ok"


def test_the_demo_routes_answer_in_the_playground_whatever_the_public_url(session, settings, monkeypatch):
    for name in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "DEEPSEEK_API_KEY", "DASHSCOPE_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    settings.ROUTERWEB_DEMO_PROVIDER = True
    settings.ROUTERWEB_PUBLIC_URL = "http://127.0.0.1:1"  # seed_demo run by hand, not knowing the port
    call_command("seed_demo", stdout=io.StringIO())

    response = play(session, "default", max_tokens=5)

    assert response.status_code == 200, response.text
    assert response.headers["X-Router-Model"] == "demo-echo"
    assert response.json()["usage"]["cost"] > 0  # the demo model has a price: the answer carries the cost
