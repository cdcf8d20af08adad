"""The hot path's Redis connection (routing/redis_pipe.py) against a real Redis, and a silent server:
pipelined requests, error replies, timeouts, the database number, and the response cache's entries in
the format of Django's RedisCache."""

import asyncio
import uuid
from datetime import UTC, datetime

import pytest
import redis
from django.core.cache import caches
from django.test import override_settings
from redis.exceptions import ResponseError

from routing.redis_pipe import ConnectionLostUnanswered, RedisPipe, redis_pipe, resp_pack
from routing.response_cache import CachePolicy, ResponseCache
from routing.usage import Usage
from tests.conftest import REDIS_FOR_TESTS


def run(coroutine):
    return asyncio.run(coroutine)


def test_resp_pack_matches_redis_py():
    commands = (("SET", "k", "välue", "PX", 1500), ("EVALSHA", "ab", 2, b"raw", 1.5))
    connection = redis.Connection()
    assert resp_pack(commands) == b"".join(connection.pack_commands(commands))


def test_concurrent_requests_each_get_their_own_replies():
    pipe = RedisPipe(REDIS_FOR_TESTS)
    prefix = f"pipe-{uuid.uuid4().hex[:8]}:"

    async def one(n: int):
        key = f"{prefix}{n}"
        _, (value,), _ = await pipe.execute(("SET", key, str(n)), ("MGET", key), ("DEL", key))
        return value

    async def scenario():
        return await asyncio.gather(*(one(n) for n in range(200)))

    assert run(scenario()) == [str(n) for n in range(200)]


def test_an_error_reply_raises_after_all_replies_and_the_connection_goes_on():
    pipe = RedisPipe(REDIS_FOR_TESTS)
    key = f"pipe-{uuid.uuid4().hex[:8]}"

    async def scenario():
        with pytest.raises(ResponseError, match="NOSCRIPT"):
            await pipe.execute(("SET", key, "1", "EX", 10), ("EVALSHA", "0" * 40, 0))
        return await pipe.execute(("GET", key))

    assert run(scenario()) == ["1"]  # the SET before the error was applied, and the connection still works


def test_bytes_and_the_database_number():
    pipe = RedisPipe("redis://127.0.0.1:6379/5", decode=False)
    key = f"pipe-{uuid.uuid4().hex[:8]}"
    run(pipe.execute(("SET", key, b"\x00\xff", "EX", 10)))
    with redis.Redis(host="127.0.0.1", port=6379, db=5) as other:
        assert other.get(key) == b"\x00\xff"
    assert run(pipe.execute(("GET", key))) == [b"\x00\xff"]


def test_a_silent_server_times_out_and_the_connection_is_dropped():
    connections = []

    async def scenario():
        async def accept(reader, writer):
            connections.append(writer)  # reads nothing, answers nothing

        server = await asyncio.start_server(accept, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        pipe = RedisPipe(f"redis://127.0.0.1:{port}/0", timeout_s=0.2)
        for _ in range(2):
            with pytest.raises(TimeoutError):
                await pipe.execute(("PING",))
        server.close()

    run(scenario())
    assert len(connections) == 2  # the second request did not wait behind the first one's lost replies


async def _scripted_server(answer: bytes, *, then_close: bool = False):
    """A server on loopback that, once it has read anything, writes `answer` one byte at a time (then
    closes the connection); returns the server and its redis:// URL."""

    async def accept(reader, writer):
        await reader.read(1)
        for byte in answer:
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(0)
        if then_close:
            writer.close()

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    return server, f"redis://127.0.0.1:{server.sockets[0].getsockname()[1]}/0"


def test_replies_cut_anywhere_reach_each_request_in_order():
    """Replies arriving a byte at a time, among them ones Python takes for false (0, nil, an empty array),
    are handed to the requests waiting on them in order; an error reply fails only its own request."""
    answer = b":0\r\n" + b"$-1\r\n:5\r\n-ERR bad\r\n" + b"*0\r\n+OK\r\n" + b"$0\r\n\r\n"

    async def scenario():
        server, url = await _scripted_server(answer)
        pipe = RedisPipe(url, timeout_s=5)
        await pipe._pipe()  # open: the four requests below are queued in one turn, before any reply
        requests = [
            pipe.execute(("ONE",)),
            pipe.execute(("TWO",), ("THREE",), ("FOUR",)),
            pipe.execute(("FIVE",), ("SIX",)),
            pipe.execute(("SEVEN",)),
        ]
        results = await asyncio.gather(*requests, return_exceptions=True)
        server.close()
        return results

    first, second, third, fourth = run(scenario())
    assert first == [0]
    assert isinstance(second, ResponseError) and str(second) == "ERR bad"
    assert third == [[], "OK"]
    assert fourth == [""]


def test_a_connection_lost_mid_answer_fails_the_request_it_answered_in_part_and_the_rest_unanswered():
    async def scenario():
        server, url = await _scripted_server(b":1\r\n:2\r\n", then_close=True)
        pipe = RedisPipe(url, timeout_s=5)
        connection = await pipe._pipe()
        answered_in_part = connection.request(resp_pack((("A",), ("B",), ("C",))), 3)
        unanswered = connection.request(resp_pack((("D",),)), 1)
        results = await asyncio.gather(answered_in_part, unanswered, return_exceptions=True)
        server.close()
        return results

    answered_in_part, unanswered = run(scenario())
    assert type(answered_in_part) is redis.exceptions.ConnectionError  # not retried: two of its commands ran
    assert isinstance(unanswered, ConnectionLostUnanswered)  # retried on a new connection by `execute`


def test_one_pipe_per_url_whether_its_defaults_are_spelt_out_or_not():
    """The circuits and the rate limits must share the worker's pipe for their commands to leave in one write."""
    assert redis_pipe(REDIS_FOR_TESTS) is redis_pipe(REDIS_FOR_TESTS, decode=True, timeout_s=1.0)
    assert redis_pipe(REDIS_FOR_TESTS, decode=False) is not redis_pipe(REDIS_FOR_TESTS)


def test_redis_down_is_a_connection_error():
    with pytest.raises((redis.exceptions.ConnectionError, OSError)):
        run(RedisPipe("redis://127.0.0.1:1/0").execute(("PING",)))


@override_settings(
    CACHES={
        "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
        "shared": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_FOR_TESTS,
            "KEY_PREFIX": "pipe",
        },
    }
)
def test_response_cache_entries_are_django_redis_cache_entries():
    cache = ResponseCache(alias="shared", max_entry_bytes=10_000, max_total_bytes=1_000_000)
    assert cache.redis is not None
    key = f"rc:test:{uuid.uuid4().hex}"
    completion = {"id": "x", "created": 1, "object": "chat.completion", "choices": [], "model": "m"}

    async def scenario():
        stored = await cache.store(
            key, policy=CachePolicy(ttl_s=60, shared=False), completion=completion, model="m",
            usage=Usage(3, 1, 2), request_id="req_1", created_at=datetime(2026, 12, 4, tzinfo=UTC),
        )  # fmt: skip
        return stored, await cache.lookup(key)

    stored, hit = run(scenario())
    assert stored and hit.usage == Usage(3, 1, 2)
    assert hit.completion == {"object": "chat.completion", "choices": [], "model": "m"}  # no id, no created
    assert caches["shared"].get(key) is not None  # Django's own RedisCache reads the same entry
    caches["shared"].delete(key)
    assert run(cache.lookup(key)) is None


async def _writes_recorded(pipe: RedisPipe) -> list[bytes]:
    """The pipe's connection, opened, with every write it makes from now on appended to the list returned."""
    writes = []
    connection = await pipe._pipe()
    write = connection.transport.write
    connection.transport.write = lambda data: (writes.append(data), write(data))
    return writes


def test_requests_started_in_one_turn_of_the_loop_leave_in_one_write():
    pipe = RedisPipe(REDIS_FOR_TESTS)

    async def scenario():
        writes = await _writes_recorded(pipe)
        replies = await asyncio.gather(pipe.execute(("PING",)), pipe.execute(("ECHO", "two")), pipe.execute(("PING",)))
        return writes, replies

    writes, replies = run(scenario())
    assert replies == [["PONG"], ["two"], ["PONG"]]
    assert len(writes) == 1


def test_commands_sent_before_their_replies_are_awaited_leave_with_the_next_exchange():
    """What a call's admission does (routing/admission.py): its commands are queued when it is sent, the
    circuit read that follows in the same turn joins them, and one write carries both, with no task."""
    pipe = RedisPipe(REDIS_FOR_TESTS)

    async def scenario():
        writes = await _writes_recorded(pipe)
        sent = pipe.send_packed(resp_pack((("ECHO", "first"),)), 1)
        read = await pipe.execute(("ECHO", "second"))
        return writes, await sent, read

    writes, sent, read = run(scenario())
    assert (sent, read) == (["first"], ["second"])
    assert writes == [resp_pack((("ECHO", "first"), ("ECHO", "second")))]


def test_a_send_before_the_connection_is_open_opens_it_when_awaited():
    async def scenario():
        return await RedisPipe(REDIS_FOR_TESTS).send_packed(resp_pack((("PING",),)), 1)

    assert run(scenario()) == ["PONG"]
