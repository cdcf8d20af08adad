"""Rate limits through the live gateway: the exact boundary, OpenAI's headers, TPM correction, users,
the playground, Redis down (fail open) and two worker processes sharing one counter."""

import asyncio
import logging
import uuid
from types import SimpleNamespace

import httpx
import openai
import pytest
from django.test import override_settings
from limits.aio.storage.redis.bridge import RedisBridge

from routing.models import ApiKey, UserRateLimit
from routing.rate_windows import MemoryWindows, RedisWindows
from routing.ratelimit import Limit, LimitSet, RateLimiter, duration_text, rate_limiter_build
from routing.redis_pipe import RedisPipe, resp_pack, resp_pack_argument
from routing.runtime import runtime_installed
from routing.services import api_key_create
from tests.conftest import REDIS_FOR_TESTS, calls_settle

HELLO = [{"role": "user", "content": "hello router"}]
HEADERS = [f"x-ratelimit-{what}-{kind}" for kind in ("requests", "tokens") for what in ("limit", "remaining", "reset")]


def chat(http, model="echo-model", **body):
    return http.post("/v1/chat/completions", json={"model": model, "messages": HELLO, **body})


def test_requests_per_minute_boundary_and_headers(http, fake_model, user, recorded_calls):
    fake_model("echo-model", "echo+words=3")
    ApiKey.objects.filter(user=user).update(rpm_limit=3)
    for n in range(3):
        answer = chat(http)
        assert answer.status_code == 200, answer.text
        assert answer.headers["x-ratelimit-limit-requests"] == "3"
        assert answer.headers["x-ratelimit-remaining-requests"] == str(2 - n)
        assert answer.headers["x-ratelimit-reset-requests"].endswith("s")
    refused = chat(http)
    assert refused.status_code == 429
    error = refused.json()["error"]
    assert (error["type"], error["code"]) == ("rate_limit_error", "rate_limit_exceeded")
    assert "3 requests per minute of this API key" in error["message"]
    assert int(refused.headers["Retry-After"]) >= 1
    assert refused.headers["x-ratelimit-remaining-requests"] == "0"
    calls_settle()
    rows = recorded_calls()
    assert [row.status for row in rows].count("ok") == 3
    (rejected,) = [row for row in rows if row.status == "rejected"]
    assert (rejected.http_status, rejected.error_code, rejected.cost_usd) == (429, "rate_limit_exceeded", 0)


def test_no_limit_no_headers(http, fake_model):
    fake_model("echo-model")
    answer = chat(http)
    assert answer.status_code == 200
    assert not any(name in answer.headers for name in HEADERS)


def test_tokens_per_minute_counts_the_bound_then_corrects_to_usage(http, fake_model, user):
    fake_model("echo-model", "echo+words=3")
    ApiKey.objects.filter(user=user).update(tpm_limit=5000)
    answer = chat(http, max_tokens=1000)
    assert answer.status_code == 200, answer.text
    usage = answer.json()["usage"]
    counted = int(answer.headers["x-ratelimit-limit-tokens"]) - int(answer.headers["x-ratelimit-remaining-tokens"])
    assert counted >= 1000 + usage["prompt_tokens"]  # the bound: body bytes + max_tokens
    calls_settle()
    second = chat(http, max_tokens=10)
    bound_2 = 5000 - int(second.headers["x-ratelimit-remaining-tokens"])
    # The first call now counts its real usage, the second its bound.
    assert bound_2 < usage["total_tokens"] + 10 + 200
    too_big = chat(http, max_tokens=6000)
    assert too_big.status_code == 429
    assert "more than 5000 tokens per minute of this API key" in too_big.json()["error"]["message"]


def test_sdk_backs_off_on_429(gateway, fake_model, user, api_key):
    fake_model("echo-model")
    ApiKey.objects.filter(user=user).update(rpm_limit=1)
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=api_key, max_retries=0)
    client.chat.completions.create(model="echo-model", messages=HELLO)
    with pytest.raises(openai.RateLimitError) as refused:
        client.chat.completions.create(model="echo-model", messages=HELLO)
    assert refused.value.code == "rate_limit_exceeded"
    assert refused.value.response.headers["retry-after"]


def test_user_limit_spans_keys_and_the_playground(gateway, fake_model, user, login):
    fake_model("echo-model")
    UserRateLimit.objects.create(user=user, rpm_limit=2)
    keys = [api_key_create(user=user, name=f"k{i}")[1] for i in range(2)]
    answers = [
        httpx.post(
            f"{gateway.url}/v1/chat/completions",
            json={"model": "echo-model", "messages": HELLO},
            headers={"Authorization": f"Bearer {key}"},
        )
        for key in keys
    ]
    assert [a.status_code for a in answers] == [200, 200]
    browser = login("alice", "pw-alice-123")  # through the live server, as the page does
    played = browser.post("/playground/api/chat", json={"model": "echo-model", "messages": HELLO})
    assert played.status_code == 429, played.text
    assert "your user" in played.json()["error"]["message"]


@override_settings(ROUTERWEB_KEY_RPM=2)
def test_default_for_every_key(http, fake_model, user):
    fake_model("echo-model")
    runtime_installed().ratelimiter = rate_limiter_build()
    assert [chat(http).status_code for _ in range(3)] == [200, 200, 429]
    key = ApiKey.objects.get(user=user)
    key.rpm_limit = 10  # a key's own limit wins
    key.save()
    assert chat(http).status_code == 200


class BrokenWindows(MemoryWindows):
    async def hit(self, *args):
        raise ConnectionError("redis down")


def test_counters_down_fail_open_with_warning_and_counter(caplog):
    limiter = RateLimiter(BrokenWindows(), clock=lambda: 100.0)
    limits = LimitSet((Limit("requests", 1, "key", 1),))
    with caplog.at_level(logging.WARNING, logger="routerweb.ratelimit"):
        for _ in range(3):
            assert asyncio.run(limiter.admit(limits, tokens=10)) is None
    assert limiter.failures == 3
    assert len([r for r in caplog.records if "serving calls without rate limits" in r.message]) == 1


def test_redis_down_serves_calls(http, fake_model, user, caplog):
    fake_model("echo-model")
    ApiKey.objects.filter(user=user).update(rpm_limit=1)
    runtime = runtime_installed()
    runtime.ratelimiter = RateLimiter(RedisWindows(RedisPipe("redis://127.0.0.1:1/0"), key_prefix="down"))
    with caplog.at_level(logging.WARNING, logger="routerweb.ratelimit"):
        assert [chat(http).status_code for _ in range(3)] == [200, 200, 200]
    assert runtime.ratelimiter.failures == 3
    assert "rate limit counters unavailable" in caplog.text


def test_two_workers_share_one_counter(gateway_worker_process, fake_model, user, api_key):
    fake_model("echo-model")
    ApiKey.objects.filter(user=user).update(rpm_limit=4)
    urls = [gateway_worker_process(), gateway_worker_process()]
    statuses = []
    for n in range(6):
        answer = httpx.post(
            f"{urls[n % 2]}/v1/chat/completions",
            json={"model": "echo-model", "messages": HELLO},
            headers={"Authorization": f"Bearer {api_key}"},
            timeout=10,
        )
        statuses.append(answer.status_code)
    assert statuses == [200, 200, 200, 200, 429, 429]


def test_memory_windows_weigh_the_previous_minute_as_the_limits_library_does():
    clock = [30.0]  # 30 s into minute 0
    windows = MemoryWindows(clock=lambda: clock[0])

    def hit(cost, amount=10):
        limits = SimpleNamespace(keys=["k"], amounts=[amount], counts_tokens=[True])
        (state,) = asyncio.run(windows.hit(limits, cost))
        return state

    assert hit(10).acquired and not hit(1).acquired
    clock[0] = 90.0  # minute 1, half of it left: the previous minute's 10 weigh 5
    state = hit(5)
    assert state.acquired and (state.previous, state.current, state.used) == (10, 5, 10)
    assert state.previous_ttl_ms == 30_000 and state.reset_in() == 30.0 % (60 / 10)
    assert not hit(1).acquired
    asyncio.run(windows.add("k", -3))  # a correction gives back
    assert hit(3).acquired and not hit(1).acquired
    clock[0] = 195.0  # minute 3: minute 1 is two minutes back, nothing weighs
    assert hit(10).acquired
    assert not hit(11, amount=10).acquired  # more than the limit itself: never


@pytest.mark.parametrize(
    ("milliseconds", "text"),
    [
        (0, "0ms"),
        (850, "850ms"),
        (999, "999ms"),
        (1000, "1s"),
        (6000, "6s"),
        (1250, "1.25s"),
        (1001, "1.001s"),
        (59_123, "59.123s"),
        (119_990, "119.99s"),
        (999_999, "999.999s"),
        (1_000_000, "1000s"),
        (1_234_567, "1234.567s"),
        (1_234_500, "1234.5s"),
    ],
)
def test_reset_headers_are_durations_as_openai_writes_them(milliseconds, text):
    assert duration_text(milliseconds) == text


class OverlappingWindows(MemoryWindows):
    concurrent = True  # as on Redis: admitted together with the circuit read


def test_an_admission_sent_with_the_read_is_given_back_when_the_call_starts_over():
    from routing.admission import call_read_and_admit
    from routing.call_context import CallContext

    windows = OverlappingWindows()
    limiter = RateLimiter(windows)
    registry = SimpleNamespace(user_limits={7: (5, 1000)})
    chat = SimpleNamespace(max_tokens=10, body_size=20, choices=1)

    async def read():
        return "views"

    async def changed(_):
        raise LookupError("the registry changed")

    async def unchanged(_):
        pass

    async def scenario():
        context = CallContext(source="api", user_id=7, runtime=SimpleNamespace(ratelimiter=limiter))
        with pytest.raises(LookupError):
            await call_read_and_admit(read(), changed, registry, context, chat, [])
        assert context.admission is None  # and the admission is given back already: the call starts over now
        again = CallContext(source="api", user_id=7, runtime=SimpleNamespace(ratelimiter=limiter))
        assert await call_read_and_admit(read(), unchanged, registry, again, chat, []) == "views"
        return again

    context = asyncio.run(scenario())
    assert context.admission is not None
    assert context.rate_limit_headers["x-ratelimit-remaining-requests"] == "4"  # the first call counts no more
    assert context.rate_limit_headers["x-ratelimit-remaining-tokens"] == str(1000 - 30)


def test_the_headers_show_for_each_kind_the_limit_with_the_least_left():
    limiter = RateLimiter(MemoryWindows())
    limits = LimitSet(
        (
            Limit("requests", 10, "key", 1),
            Limit("tokens", 100, "key", 1),
            Limit("requests", 3, "user", 2),
            Limit("tokens", 1000, "user", 2),
        )
    )
    headers = asyncio.run(limiter.admit(limits, tokens=40)).headers
    assert (headers["x-ratelimit-limit-requests"], headers["x-ratelimit-remaining-requests"]) == ("3", "2")
    assert (headers["x-ratelimit-limit-tokens"], headers["x-ratelimit-remaining-tokens"]) == ("100", "60")


def test_a_limit_sets_exchange_packed_once_is_every_limits_acquire_then_every_windows_read():
    """The exchange is kept as pieces around the tokens cost; joined with a call's cost, it is exactly
    the commands packed one by one, whichever order the limits come in."""
    from routing.rate_windows import ACQUIRE, WINDOW_S

    windows = RedisWindows(RedisPipe(REDIS_FOR_TESTS), key_prefix="t")
    limits = LimitSet((Limit("tokens", 500, "key", 1), Limit("requests", 5, "key", 1), Limit("tokens", 900, "user", 2)))
    exchange = windows._exchange_pack(limits)
    commands = []
    for key, amount, counts_tokens in zip(limits.keys, limits.amounts, limits.counts_tokens, strict=True):
        commands.append(("EVALSHA", ACQUIRE.sha, 2, *windows._keys(key), amount, WINDOW_S, 123 if counts_tokens else 1))
    keys = [windows._keys(key) for key in limits.keys]
    commands.append(("MGET", *(counter for pair in keys for counter in pair)))
    commands += [("PTTL", current_key) for _, current_key in keys]
    assert resp_pack_argument(123).join(exchange.pieces) == resp_pack(tuple(commands))
    assert (exchange.commands, exchange.limits) == (len(commands), 3)


@pytest.mark.parametrize(
    "counters",
    [
        {},  # a limit never hit
        {"current": (7, 90_000)},  # the current minute, with more than a window left
        {"current": (7, 30_000)},  # a current counter whose minute has ended: it is the previous one now
        {"previous": (3, 25_000), "current": (5, 85_000)},  # as the scripts leave them: a window apart
        {"previous": (3, 5_000), "current": (5, 65_000)},  # the previous minute nearly out of the window
        {"previous": (3, 20_000), "current": (5, 40_000)},  # minutes later: the old previous one is dropped
        {"previous": (3, 20_000)},  # a current counter evicted: the previous one no longer weighs
        {"current": (7, None)},  # a counter without an expiry (the library's script leaves none)
    ],  # times left away from where the weighing rounds or the reset wraps (the two reads are ms apart)
)
def test_redis_windows_read_a_window_as_the_limits_librarys_script_does(counters):
    """The windows are read with MGET and PTTL, not the library's `sliding_window.lua` (a Lua call costs
    Redis five times as much CPU); both read the same state from the counters as the library's scripts
    leave them: a previous counter a window before its current one (the previous one's time left is
    not read). Where they differ (a counter evicted, or one without an expiry), the state read is the
    one that counts less: the headers never show less left than the acquire script lets through."""
    import redis as redis_py

    from routing.rate_windows import WINDOW_S, _window_state, window_state, windows_read

    windows = RedisWindows(RedisPipe(REDIS_FOR_TESTS), key_prefix=f"t-{uuid.uuid4().hex[:8]}")
    limits = LimitSet((Limit("requests", 10, "key", 1),))
    previous_key, current_key = windows._keys(limits.keys[0])
    client = redis_py.Redis.from_url(REDIS_FOR_TESTS, decode_responses=True)
    for name, key in (("previous", previous_key), ("current", current_key)):
        if name in counters:
            value, ttl_ms = counters[name]
            client.set(key, value, px=ttl_ms)
    read = windows_read([(previous_key, current_key)])
    assert windows._exchange_pack(limits).pieces[-1].endswith(resp_pack(read))  # what a call's exchange reads
    (counts, current_ttl) = asyncio.run(windows.redis.execute(*read))
    ours = _window_state(True, *counts, current_ttl)
    script = client.register_script(RedisBridge.SCRIPT_SLIDING_WINDOW)
    previous, previous_ttl, current, current_ttl = script(keys=[previous_key, current_key], args=[WINDOW_S])
    theirs = window_state(True, int(previous or 0), max(0, previous_ttl), int(current or 0), max(0, current_ttl))
    assert ours.current == theirs.current and ours.current_ttl_ms == pytest.approx(theirs.current_ttl_ms, abs=50)
    if "current" in counters and counters["current"][1] is not None:
        assert (ours.previous, ours.used) == (theirs.previous, theirs.used)
        assert ours.reset_ms == pytest.approx(theirs.reset_ms, abs=50)
    else:
        assert ours.used <= theirs.used
    client.delete(previous_key, current_key)


def test_redis_corrections_keep_the_counters_as_the_librarys_scripts_leave_them():
    """A correction that makes a counter gives it the library's expiry in the same write (a counter left
    without one would never empty); one that adds to a counter keeps its time left; one that gives back
    never takes it below 0."""
    import redis as redis_py

    from routing.rate_windows import WINDOW_MS

    windows = RedisWindows(RedisPipe(REDIS_FOR_TESTS), key_prefix=f"t-{uuid.uuid4().hex[:8]}")
    _, current_key = windows._keys("k")
    client = redis_py.Redis.from_url(REDIS_FOR_TESTS, decode_responses=True)

    async def corrections():
        await windows.add("k", 40)
        made = (client.get(current_key), client.pttl(current_key))
        client.pexpire(current_key, 70_000)
        await windows.add("k", 2)
        added = (client.get(current_key), client.pttl(current_key))
        await windows.add("k", -100)
        return made, added, client.get(current_key)

    made, added, given_back = asyncio.run(corrections())
    assert made[0] == "40" and 2 * WINDOW_MS - 1000 < made[1] <= 2 * WINDOW_MS
    assert added[0] == "42" and 69_000 < added[1] <= 70_000
    assert given_back == "0"
    client.delete(current_key)
