"""The response cache through the live gateway: hits and misses, scoping, TTL, the temperature rule,
the never-cached cases, streaming replay through the official SDK and the cache_hit rows' saved cost."""

import httpx
import pytest

from routing.services import api_key_create
from tests.conftest import calls_settle
from tests.factories import route_create

HELLO = [{"role": "user", "content": "hello cache"}]
CACHE = {"X-Router-Cache": "true"}


def chat(http, model="echo-model", headers=None, **body):
    return http.post("/v1/chat/completions", json={"model": model, "messages": HELLO, **body}, headers=headers or {})


def upstream_calls(fake_upstream) -> int:
    return fake_upstream.app.stats()["requests"]


def test_header_opt_in_hit_and_miss_with_rows_and_saved_cost(http, fake_model, fake_upstream, recorded_calls):
    fake_model("echo-model", "echo+words=4", price=(1, 2))
    first = chat(http, headers=CACHE)
    assert first.status_code == 200 and first.headers["X-Router-Cache"] == "miss"
    calls_settle()
    second = chat(http, headers=CACHE)
    assert second.status_code == 200 and second.headers["X-Router-Cache"] == "hit"
    assert upstream_calls(fake_upstream) == 1
    a, b = first.json(), second.json()
    assert a["choices"] == b["choices"] and a["usage"] == b["usage"]
    assert a["id"] != b["id"]
    rows = recorded_calls()
    assert [row.status for row in rows] == ["ok", "cache_hit"]
    original, hit = rows
    assert hit.cost_usd == 0 and hit.saved_usd == original.cost_usd > 0
    assert (hit.model_id, hit.prompt_tokens, hit.completion_tokens) == (original.model_id, 0, 0)
    assert hit.attempt_count == 0


def test_no_opt_in_no_cache(http, fake_model, fake_upstream):
    fake_model("echo-model")
    assert "X-Router-Cache" not in chat(http).headers
    chat(http)
    assert upstream_calls(fake_upstream) == 2


def test_body_field_is_not_forwarded_and_other_parameters_miss(http, fake_model, fake_upstream):
    fake_model("echo-model")
    assert chat(http, cache={"ttl": 60}).headers["X-Router-Cache"] == "miss"
    calls_settle()
    assert fake_upstream.app.stats()["last_request"].get("cache") is None
    assert chat(http, cache={"ttl": 60}).headers["X-Router-Cache"] == "hit"
    assert chat(http, cache={"ttl": 60}, max_tokens=7).headers["X-Router-Cache"] == "miss"
    bad = chat(http, cache={"ttl": "soon"})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "cache"


def test_route_flag_per_user_scope_and_shared(gateway, fake_model, fake_upstream, user, api_key):
    fake_model("echo-model")
    route = route_create("cached", ["echo-model"])
    route.cache_ttl_s = 600
    route.save()
    other_user = user.__class__.objects.create_user("bob", password="pw-bob-12345")
    _, other_key = api_key_create(user=other_user, name="bob")
    alice = httpx.Client(base_url=gateway.url, headers={"Authorization": f"Bearer {api_key}"})
    bob = httpx.Client(base_url=gateway.url, headers={"Authorization": f"Bearer {other_key}"})
    assert chat(alice, "cached").headers["X-Router-Cache"] == "miss"
    calls_settle()
    assert chat(alice, "cached").headers["X-Router-Cache"] == "hit"
    assert chat(bob, "cached").headers["X-Router-Cache"] == "miss"  # per user by default
    route.cache_shared = True
    route.save()
    assert chat(alice, "cached").headers["X-Router-Cache"] == "miss"
    calls_settle()
    assert chat(bob, "cached").headers["X-Router-Cache"] == "hit"
    assert chat(bob, "cached", headers={"X-Router-Cache": "false"}).headers.get("X-Router-Cache") is None


def test_temperature_rule(http, fake_model):
    fake_model("echo-model")
    route = route_create("cached", ["echo-model"])
    route.cache_ttl_s = 600
    route.save()
    assert "X-Router-Cache" not in chat(http, "cached", temperature=0.7).headers
    assert chat(http, "cached", temperature=0).headers["X-Router-Cache"] == "miss"
    assert chat(http, "cached", temperature=0.7, headers=CACHE).headers["X-Router-Cache"] == "miss"
    calls_settle()
    assert chat(http, "cached", temperature=0.7, headers=CACHE).headers["X-Router-Cache"] == "hit"


def test_clearing_a_route_moves_its_generation(http, fake_model):
    fake_model("echo-model")
    route = route_create("cached", ["echo-model"])
    assert chat(http, "cached", headers=CACHE).headers["X-Router-Cache"] == "miss"
    calls_settle()
    assert chat(http, "cached", headers=CACHE).headers["X-Router-Cache"] == "hit"
    from routing.services import route_cache_clear

    route_cache_clear(route=route)
    assert chat(http, "cached", headers=CACHE).headers["X-Router-Cache"] == "miss"


def test_ttl_expiry(http, fake_model):
    fake_model("echo-model")
    assert chat(http, cache={"ttl": 1}).headers["X-Router-Cache"] == "miss"
    calls_settle()
    assert chat(http, cache={"ttl": 1}).headers["X-Router-Cache"] == "hit"
    import time

    time.sleep(1.1)
    assert chat(http, cache={"ttl": 1}).headers["X-Router-Cache"] == "miss"


@pytest.mark.parametrize(
    "upstream, body",
    [
        ("echo+status=500", {}),  # errors
        ("echo+nousage", {}),  # estimated usage
        ("echo+drop=2", {"stream": True}),  # dropped streams
        ("echo+nousage", {"stream": True}),  # streams without usage
    ],
)
def test_never_cached(http, fake_model, fake_upstream, upstream, body):
    fake_model("echo-model", upstream)
    for _ in range(2):
        response = chat(http, headers=CACHE, **body)
        response.read()
        calls_settle()
        assert response.headers.get("X-Router-Cache") != "hit"


def test_streaming_replay_through_the_sdk(client, fake_model, fake_upstream, recorded_calls):
    fake_model("echo-model", "echo+words=5", price=(1, 2))
    stored = client.chat.completions.create(model="echo-model", messages=HELLO, extra_headers=CACHE)
    calls_settle()
    stream = client.chat.completions.create(
        model="echo-model", messages=HELLO, extra_headers=CACHE, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == stored.choices[0].message.content
    assert chunks[-1].usage.completion_tokens == 5
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert upstream_calls(fake_upstream) == 1
    rows = recorded_calls()
    assert rows[-1].status == "cache_hit" and rows[-1].stream and rows[-1].saved_usd == rows[0].cost_usd


def test_entry_size_cap(http, fake_model, monkeypatch):
    from routing.runtime import runtime_installed

    fake_model("echo-model")
    monkeypatch.setattr(runtime_installed().response_cache, "max_entry_bytes", 10)
    chat(http, headers=CACHE)
    calls_settle()
    assert chat(http, headers=CACHE).headers["X-Router-Cache"] == "miss"


def test_a_complete_stream_fills_the_cache(client, fake_model, fake_upstream, recorded_calls):
    fake_model("echo-model", "echo+words=6", price=(1, 2))
    streamed = client.chat.completions.create(model="echo-model", messages=HELLO, extra_headers=CACHE, stream=True)
    text = "".join(c.choices[0].delta.content or "" for c in streamed if c.choices)
    calls_settle()
    answer = client.chat.completions.with_raw_response.create(model="echo-model", messages=HELLO, extra_headers=CACHE)
    assert answer.headers["X-Router-Cache"] == "hit"
    completion = answer.parse()
    assert completion.choices[0].message.content == text
    assert completion.choices[0].finish_reason == "stop"
    assert (completion.usage.completion_tokens, completion.usage.total_tokens) == (
        6,
        completion.usage.prompt_tokens + 6,
    )
    replayed = client.chat.completions.create(model="echo-model", messages=HELLO, extra_headers=CACHE, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in replayed if c.choices) == text
    assert upstream_calls(fake_upstream) == 1
    calls_settle()
    original, *hits = recorded_calls()
    assert original.stream and [hit.status for hit in hits] == ["cache_hit", "cache_hit"]
    assert all(hit.saved_usd == original.cost_usd > 0 for hit in hits)


def test_a_stream_the_client_left_is_not_stored(gateway, fake_model, fake_upstream, user, api_key):
    fake_model("echo-model", "echo+words=40+chunk-delay=20")
    body = {"model": "echo-model", "messages": HELLO, "stream": True}
    headers = {"Authorization": f"Bearer {api_key}", **CACHE}
    with httpx.Client(base_url=gateway.url, headers=headers) as http:
        with http.stream("POST", "/v1/chat/completions", json=body) as response:
            next(response.iter_bytes())  # the first chunk, then the client leaves
        calls_settle()
        assert http.post("/v1/chat/completions", json=body).headers["X-Router-Cache"] == "miss"
