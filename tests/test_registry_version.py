"""The registry version in the database, the worker's snapshot that follows it, and the parts that keep
serving through outages: the shared state's failover to memory and the database threads' one retry.

Integration tests (real processes, real outages) are in tests/test_outages.py.
"""

import asyncio
import logging
from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model
from django.db import OperationalError, connection, transaction
from redis.exceptions import ConnectionError as RedisConnectionError

from billing.models import Budget
from routerweb.db_executor import DbExecutor
from routing.errors import ApiError
from routing.models import RouteTarget
from routing.registry import RegistryCache, RegistryUnavailable
from routing.registry_file import registry_import
from routing.registry_version import registry_version_read
from routing.runtime import runtime_build
from routing.services import api_key_create
from routing.shared_state import FailoverState, LocalMemoryState
from routing.snapshot import Registry
from tests.factories import model_create, provider_create, route_create


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# ---------------------------------------------------------------------------- the version in the database


def test_every_registry_change_bumps_the_version_in_its_transaction(db):
    before = int(registry_version_read())
    model = model_create(name="m", price=(1, 2))  # a provider, a model and a price: three saves
    after_create = int(registry_version_read())
    assert after_create >= before + 3
    user = get_user_model().objects.create_user("bob")
    key, _ = api_key_create(user=user, name="k")
    key.allowed_models.add(model)
    Budget.objects.create(user=user, limit_usd=Decimal(5))
    assert int(registry_version_read()) >= after_create + 4  # user, key, allow-list, budget


def test_a_rolled_back_change_leaves_the_version_alone(db):
    before = registry_version_read()
    with pytest.raises(RuntimeError), transaction.atomic():
        provider_create(name="doomed")
        raise RuntimeError("rolled back")
    assert registry_version_read() == before


def test_a_login_does_not_bump_the_version_but_deactivating_a_user_does(db):
    user = get_user_model().objects.create_user("carol")
    before = registry_version_read()
    user.save(update_fields=["last_login"])
    assert registry_version_read() == before
    user.is_active = False
    user.save(update_fields=["is_active"])
    assert registry_version_read() != before


def test_route_targets_replaced_by_an_import_bump_the_version(db):
    """The import writes targets with bulk_create, which sends no signals: it bumps on its own."""
    provider = provider_create(name="p")
    model_create(name="a", provider=provider)
    route_create("r", [])
    RouteTarget.objects.all().delete()
    before = registry_version_read()
    registry_import(data={"routes": [{"name": "r", "targets": [{"model": "a"}]}]})
    assert registry_version_read() != before


# ---------------------------------------------------------------------------- the worker's snapshot


class FakeDatabase:
    """The registry's committed version and what loading it returns; `down` makes every read fail."""

    def __init__(self) -> None:
        self.version = 1
        self.down = False
        self.loads = 0

    def version_read(self) -> str:
        self._check()
        return str(self.version)

    def load(self) -> Registry:
        self._check()
        self.loads += 1
        return Registry(version=str(self.version))

    def _check(self) -> None:
        if self.down:
            raise OperationalError("connection refused")


async def run_inline(func, *args):
    return func(*args)


@pytest.fixture
def database():
    return FakeDatabase()


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def cache(database, clock):
    return RegistryCache(load=database.load, version_read=database.version_read, run=run_inline, clock=clock)


def test_a_new_token_in_the_shared_state_reloads_the_snapshot_and_the_same_token_does_not(cache, database):
    async def scenario():
        first = await cache.for_token(None)
        assert await cache.for_token(None) is first
        database.version = 2
        second = await cache.for_token("token-after-a-change")
        assert second is not first and second.version == "2"
        assert await cache.for_token("token-after-a-change") is second
        assert database.loads == 2

    asyncio.run(scenario())


def test_the_version_check_reloads_only_when_the_database_moved(cache, database):
    """The change of another process that could not announce it (no Redis) is found by the check."""

    async def scenario():
        first = await cache.check_version()
        assert await cache.check_version() is first and database.loads == 1
        database.version = 7
        current = await cache.check_version()
        assert current.version == "7" and database.loads == 2
        assert await cache.for_token(None) is current  # the token did not move: no reload

    asyncio.run(scenario())


def test_the_database_down_keeps_the_snapshot_logs_once_and_catches_up_when_back(cache, database, clock, caplog):
    caplog.set_level(logging.WARNING, logger="routerweb.registry")

    async def scenario():
        snapshot = await cache.check_version()
        database.version, database.down = 2, True
        for _ in range(5):
            assert await cache.for_token("announced") is snapshot
            assert await cache.check_version() is snapshot
            clock.now += 1
        assert len(caplog.records) == 1 and "serving the snapshot" in caplog.records[0].getMessage()
        database.down = False
        assert (await cache.check_version()).version == "2"  # the announced change is not lost

    asyncio.run(scenario())


def test_no_snapshot_and_no_database_is_registry_unavailable_a_503_for_the_api(cache, database):
    import routing.gateway

    database.down = True
    with pytest.raises(RegistryUnavailable):
        asyncio.run(cache.for_token(None))
    runtime = runtime_build()
    runtime.registry = cache
    with pytest.raises(ApiError) as refused:
        asyncio.run(routing.gateway.registry_checked_get(runtime))
    assert (refused.value.status, refused.value.code) == (503, "registry_unavailable")


# ---------------------------------------------------------------------------- Redis down


class FlakyRedis(LocalMemoryState):
    """Stands in for RedisState: answers from its own memory, or raises as redis-py does when Redis is down."""

    def __init__(self) -> None:
        super().__init__()
        self.down = False
        self.calls = 0

    async def get_many(self, keys):
        self._check()
        return await super().get_many(keys)

    async def set(self, key, value, ttl):
        self._check()
        await super().set(key, value, ttl)

    async def incr(self, key, ttl):
        self._check()
        return await super().incr(key, ttl)

    def set_sync(self, key, value):
        self._check()
        super().set_sync(key, value)

    def _check(self) -> None:
        self.calls += 1
        if self.down:
            raise RedisConnectionError("Error 111 connecting to 127.0.0.1:6399. Connection refused.")


def test_redis_down_fails_over_to_memory_tries_again_each_second_and_comes_back(clock, caplog):
    caplog.set_level(logging.WARNING, logger="routerweb.shared_state")
    redis, memory = FlakyRedis(), LocalMemoryState()
    state = FailoverState(redis, memory, retry_s=1.0, clock=clock)

    async def scenario():
        await state.set("shared", "from-redis", ttl=60)
        redis.down = True
        assert await state.get_many(["shared"]) == [None]  # memory: this worker's state only
        assert await state.incr("fails", ttl=60) == 1
        assert await state.incr("fails", ttl=60) == 2  # circuits keep counting, per worker
        assert redis.calls == 2 and state.failed_over  # one try: the others went to memory
        clock.now += 1.0
        assert await state.get_many(["fails"]) == ["2"]  # tried Redis once more, still down
        assert redis.calls == 3
        redis.down = False
        clock.now += 1.0
        assert await state.get_many(["shared", "fails"]) == ["from-redis", None]  # back to the shared state
        assert not state.failed_over and await memory.get_many(["fails"]) == [None]

    asyncio.run(scenario())
    messages = [record.getMessage() for record in caplog.records]
    assert len(messages) == 2
    assert messages[0].startswith("Redis unavailable") and messages[1].startswith("Redis answers again")


def test_announcements_redis_cannot_take_are_kept_in_this_process_without_waiting_on_redis_each_time(clock):
    """An import bumps the version once per row it writes: a Redis that is down is tried once, not per row."""
    redis, memory = FlakyRedis(), LocalMemoryState()
    state = FailoverState(redis, memory, retry_s=1.0, clock=clock)
    redis.down = True
    for n in range(5):
        state.set_sync("registry:version", f"token-{n}")
    assert asyncio.run(memory.get_many(["registry:version"])) == ["token-4"]
    assert redis.calls == 1 and state.failed_over


# ---------------------------------------------------------------------------- a dead database connection


def test_a_first_statement_failing_on_a_dead_connection_is_retried_once(transactional_db):
    executor = DbExecutor(threads=1)
    tries = []

    def read_once_dead() -> int:
        tries.append(1)
        with connection.cursor() as cursor:
            if len(tries) == 1:
                raise OperationalError("server closed the connection unexpectedly")
            cursor.execute("SELECT 1")
            return cursor.fetchone()[0]

    try:
        assert asyncio.run(executor.run(read_once_dead)) == 1
        assert len(tries) == 2
    finally:
        executor.close_connections()


def test_a_connection_lost_inside_the_first_transaction_is_retried(transactional_db):
    """The server rolls back a transaction whose connection dies: nothing of it happened."""
    executor = DbExecutor(threads=1)
    tries = []

    def grant_once_dead() -> int:
        tries.append(1)
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            if len(tries) == 1:
                raise OperationalError("server closed the connection unexpectedly")
            return len(tries)

    try:
        assert asyncio.run(executor.run(grant_once_dead)) == 2
    finally:
        executor.close_connections()


def test_a_failure_after_a_statement_succeeded_is_not_retried(transactional_db):
    executor = DbExecutor(threads=1)
    tries = []

    def write_then_fail() -> None:
        tries.append(1)
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        raise OperationalError("server closed the connection unexpectedly")

    try:
        with pytest.raises(OperationalError):
            asyncio.run(executor.run(write_then_fail))
        assert len(tries) == 1
    finally:
        executor.close_connections()
