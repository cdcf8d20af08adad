"""The router's plain parts, without servers: ordering, skips, bodies, circuit states, SSE parsing."""

import asyncio
import random
import time
import uuid
from collections import Counter

import orjson
import pytest

from routing.circuit import CircuitBreaker, CircuitView
from routing.errors import ApiError
from routing.providers.openai_compat import OpenAICompatAdapter
from routing.router import candidates_for, skip_reason
from routing.shared_state import LocalMemoryState, RedisState
from routing.snapshot import ModelSnap, ProviderSnap, Registry, RouteSnap
from routing.strategies import route_order
from routing.streaming import SseParser
from routing.upstream import retry_after_s
from tests.conftest import REDIS_FOR_TESTS


def provider(name="p", api_key_env=""):
    return ProviderSnap(1, name, "http://x/v1", api_key_env, 1.0, 5.0, True)


def model(name, *, enabled=True, api_key_env="", upstream=None):
    return ModelSnap(hash(name) % 1000, name, upstream or name, provider(api_key_env=api_key_env), enabled, None)


@pytest.fixture
def registry():
    models = {name: model(name) for name in ("a", "b", "c", "d")}
    routes = {
        "ordered": RouteSnap(1, "ordered", "ordered", ((models["a"], 1), (models["b"], 1), (models["c"], 1))),
        "ab": RouteSnap(2, "ab", "weighted", ((models["a"], 80), (models["b"], 15), (models["c"], 5))),
    }
    return Registry(version="v", models=models, routes=routes)


def names(models):
    return [m.name for m in models]


def test_ordered_route_then_fallback_models_without_repeats(registry):
    assert names(candidates_for(registry, "ordered", ["c", "d", "a"])) == ["a", "b", "c", "d"]
    assert names(candidates_for(registry, "d", ["a"])) == ["d", "a"]


def test_a_route_in_fallback_models_brings_its_targets(registry):
    assert names(candidates_for(registry, "d", ["ordered"])) == ["d", "a", "b", "c"]
    assert names(candidates_for(registry, "b", ["ordered", "d"])) == ["b", "a", "c", "d"]


def test_temperature_and_top_p_outside_openais_ranges_are_400():
    from routing.schemas import chat_request_parse

    for field, value in (("temperature", 5), ("temperature", -0.1), ("top_p", 1.5)):
        body = {"model": "m", "messages": [{"role": "user", "content": "x"}], field: value}
        with pytest.raises(ApiError) as refused:
            chat_request_parse(orjson.dumps(body))
        assert (refused.value.status, refused.value.param) == (400, field)
    chat_request_parse(orjson.dumps({"model": "m", "messages": [{"role": "user", "content": "x"}], "temperature": 2}))


def test_a_route_without_targets_says_so(registry):
    empty = Registry(version="v", models=registry.models, routes={"empty": RouteSnap(3, "empty", "ordered", ())})
    with pytest.raises(ApiError) as refused:
        candidates_for(empty, "empty", [])
    assert (refused.value.status, refused.value.code) == (502, "route_without_targets")
    assert "has no targets" in refused.value.message
    assert names(candidates_for(empty, "empty", ["a"])) == ["a"]


def test_unknown_names_are_404_with_the_param(registry):
    with pytest.raises(ApiError) as missing:
        candidates_for(registry, "zzz", [])
    assert (missing.value.status, missing.value.code, missing.value.param) == (404, "model_not_found", "model")
    with pytest.raises(ApiError) as missing_fallback:
        candidates_for(registry, "a", ["zzz"])
    assert missing_fallback.value.param == "fallback_models"


def test_weighted_route_draws_the_first_target_by_weight_and_keeps_the_rest_in_order(registry):
    rng = random.Random(7)
    orders = [names(route_order(registry.routes["ab"], rng)) for _ in range(20_000)]
    firsts = Counter(order[0] for order in orders)
    assert abs(firsts["a"] / 20_000 - 0.80) < 0.01
    assert abs(firsts["b"] / 20_000 - 0.15) < 0.01
    assert abs(firsts["c"] / 20_000 - 0.05) < 0.01
    assert {tuple(o) for o in orders} == {("a", "b", "c"), ("b", "a", "c"), ("c", "a", "b")}


def test_skip_reasons(monkeypatch):
    monkeypatch.delenv("SOME_API_KEY", raising=False)
    assert skip_reason(model("off", enabled=False)) == "disabled"
    assert skip_reason(model("keyed", api_key_env="SOME_API_KEY")) == "SOME_API_KEY not set"
    monkeypatch.setenv("SOME_API_KEY", "sk-1")
    assert skip_reason(model("keyed", api_key_env="SOME_API_KEY")) is None


def test_upstream_body_rewrites_model_drops_our_fields_and_always_asks_for_usage():
    body = {"model": "route", "messages": [], "fallback_models": ["x"], "stream": True, "temperature": 0.2}
    sent = orjson.loads(OpenAICompatAdapter().request_body(body, model("m", upstream="vendor/m-2024")))
    assert sent == {
        "model": "vendor/m-2024",
        "messages": [],
        "stream": True,
        "temperature": 0.2,
        "stream_options": {"include_usage": True},
    }
    assert "stream_options" not in orjson.loads(
        OpenAICompatAdapter().request_body({"model": "m", "messages": []}, model("m"))
    )


def test_sse_parser_joins_events_split_across_reads_and_handles_crlf():
    parser = SseParser()
    assert parser.feed(b'data: {"a"') == []
    assert parser.feed(b": 1}\r\n\r\ndata: [DO") == [b'{"a": 1}']
    assert parser.feed(b"NE]\n\n: comment\n\nevent: x\ndata: one\ndata: two\n\n") == [b"[DONE]", b"one\ntwo"]


def test_retry_after_in_seconds_or_as_an_http_date():
    assert retry_after_s("2") == 2.0
    assert retry_after_s("0") is None
    assert retry_after_s("soon") is None
    assert retry_after_s("Wed, 21 Oct 2099 07:28:00 GMT") / (3600 * 24 * 365) > 50


# ---------------------------------------------------------------------------- circuit breaker states


class Clock:
    def __init__(self):
        self.now = 1_000_000.0

    def __call__(self):
        return self.now


@pytest.fixture(params=["local-memory", "redis"])
def state(request):
    prefix = f"test-circuit-{uuid.uuid4().hex[:8]}:"
    if request.param == "redis":
        return RedisState(REDIS_FOR_TESTS, prefix)
    return LocalMemoryState()


def run(coro):
    return asyncio.run(coro)


def test_circuit_state_machine(state):
    clock = Clock()
    breaker = CircuitBreaker(state, failures_to_open=3, open_seconds=30, clock=clock)
    flaky = model("flaky")

    async def scenario():
        for _ in range(2):
            view = (await breaker.read([flaky]))["flaky"]
            assert await breaker.admit(flaky, view) is None
            await breaker.record_failure(flaky, view)
        view = (await breaker.read([flaky]))["flaky"]
        assert view.failures == 2
        await breaker.record_failure(flaky, view)  # third consecutive failure: open
        view = (await breaker.read([flaky]))["flaky"]
        assert await breaker.admit(flaky, view) == "circuit open, retry in 30s"

        clock.now += 31  # half-open: exactly one probe
        first, second = (await breaker.read([flaky]))["flaky"], (await breaker.read([flaky]))["flaky"]
        assert await breaker.admit(flaky, first) is None and first.probing
        assert await breaker.admit(flaky, second) == "circuit half-open, another request is probing"
        await breaker.record_failure(flaky, first)  # the probe failed: open again
        view = (await breaker.read([flaky]))["flaky"]
        assert (await breaker.admit(flaky, view)).startswith("circuit open")

        clock.now += 31
        probe = (await breaker.read([flaky]))["flaky"]
        assert await breaker.admit(flaky, probe) is None
        await breaker.record_success(flaky, probe)  # the probe succeeded: closed
        view = (await breaker.read([flaky]))["flaky"]
        assert view == CircuitView() and await breaker.admit(flaky, view) is None

    run(scenario())


def test_open_reason_reads_the_circuit_without_taking_the_probe(state):
    clock = Clock()
    breaker = CircuitBreaker(state, failures_to_open=1, open_seconds=30, clock=clock)
    flaky = model("flaky")

    async def scenario():
        assert breaker.open_reason(flaky, (await breaker.read([flaky]))["flaky"]) is None
        await breaker.record_failure(flaky, CircuitView())
        view = (await breaker.read([flaky]))["flaky"]
        assert breaker.open_reason(flaky, view) == "circuit open, retry in 30s"
        clock.now += 31
        view = (await breaker.read([flaky]))["flaky"]
        assert breaker.open_reason(flaky, view) is None  # half-open: the page offers it ...
        assert await breaker.admit(flaky, view) is None and view.probing  # ... and the probe is still free

    run(scenario())


def test_a_success_resets_the_consecutive_failure_count(state):
    breaker = CircuitBreaker(state, failures_to_open=2, open_seconds=30, clock=Clock())
    flaky = model("flaky")

    async def scenario():
        await breaker.record_failure(flaky, CircuitView())
        await breaker.record_success(flaky, (await breaker.read([flaky]))["flaky"])
        await breaker.record_failure(flaky, CircuitView())
        assert (await breaker.read([flaky]))["flaky"].open_until is None

    run(scenario())


def test_retry_after_opens_at_once_for_that_long(state):
    clock = Clock()
    breaker = CircuitBreaker(state, failures_to_open=3, open_seconds=30, clock=clock)
    limited = model("limited")

    async def scenario():
        await breaker.record_failure(limited, CircuitView(), retry_after_s=5)
        view = (await breaker.read([limited]))["limited"]
        assert await breaker.admit(limited, view) == "circuit open, retry in 5s"
        clock.now += 6
        assert await breaker.admit(limited, (await breaker.read([limited]))["limited"]) is None

    run(scenario())


# ---------------------------------------------------------------------------- shared state


def test_shared_state_operations(state):
    async def scenario():
        await state.set("a", "1", ttl=10)
        assert await state.get_many(["a", "missing"]) == ["1", None]
        assert await state.add("lock", "x", ttl=10) is True
        assert await state.add("lock", "y", ttl=10) is False
        assert [await state.incr("count", ttl=10) for _ in range(3)] == [1, 2, 3]
        await state.delete("a", "lock", "count")
        assert await state.get_many(["a", "lock", "count"]) == [None, None, None]

    run(scenario())


def test_local_memory_values_expire_on_its_clock():
    clock = Clock()
    state = LocalMemoryState(clock=clock)

    async def scenario():
        await state.set("short", "1", ttl=10)
        await state.incr("count", ttl=10)
        clock.now += 9.9
        assert await state.get_many(["short", "count"]) == ["1", "1"]
        assert await state.add("short", "2", ttl=10) is False
        clock.now += 0.1
        assert await state.get_many(["short", "count"]) == [None, None]
        assert await state.add("short", "2", ttl=10) is True
        assert await state.incr("count", ttl=10) == 1  # an expired counter starts again

    run(scenario())


def test_redis_values_expire():
    """Redis expires keys on its own clock, so this one waits for real (polling, two seconds at most)."""
    state = RedisState(REDIS_FOR_TESTS, f"test-expiry-{uuid.uuid4().hex[:8]}:")

    async def scenario():
        await state.set("short", "1", ttl=0.05)
        deadline = time.monotonic() + 2
        while await state.get_many(["short"]) != [None]:
            assert time.monotonic() < deadline, "the key outlived its TTL"
            await asyncio.sleep(0.01)

    run(scenario())


def test_redis_state_recovers_when_redis_drops_its_connections():
    import redis

    state = RedisState(REDIS_FOR_TESTS, f"test-drop-{uuid.uuid4().hex[:8]}:")

    async def scenario():
        await state.set("k", "v", ttl=10)
        connection = await state.pipe._pipe()
        host, port = connection.transport.get_extra_info("sockname")[:2]
        with redis.Redis(host="127.0.0.1", port=6379) as admin:  # as a Redis restart would
            admin.client_kill_filter(_type=None, addr=f"{host}:{port}")
        assert await state.get_many(["k"]) == ["v"]  # retried once on a new connection
        assert await state.pipe._pipe() is not connection

    run(scenario())
