"""Outages and changes made outside the server, against real worker processes.

- Redis stopped and started again under load: no 5xx, every row stored, shared state used again after.
- A database restart (every server-side connection killed) under load: no 500, no 503 (PostgreSQL).
- Registry changes made by other processes (a management command, a script) without Redis: in force
  in the running server within about a second.
"""

import os
import shutil
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable
from decimal import Decimal

import httpx
import pytest
import redis
from django.conf import settings
from django.db import connection

from billing.models import Budget, Call, Price
from billing.pricing import cost_for_usage
from routing.models import ModelEndpoint
from routing.services import api_key_create
from testkit.live import free_port
from tests.conftest import manage_run
from tests.factories import model_create, provider_create, route_create

HELLO = [{"role": "user", "content": "hello router"}]
REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


def load_run(url: str, api_keys: list[str], body: dict, *, during: Callable[[], None]) -> Counter:
    """Send `body` back to back from one client per key while `during()` runs; the statuses seen."""
    statuses: Counter = Counter()
    lock = threading.Lock()
    stop = threading.Event()

    def client(api_key: str) -> None:
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {api_key}"}, timeout=30) as http:
            while not stop.is_set():
                status = http.post("/v1/chat/completions", json=body).status_code
                with lock:
                    statuses[status] += 1

    workers = [threading.Thread(target=client, args=(api_key,)) for api_key in api_keys]
    for worker in workers:
        worker.start()
    try:
        during()
    finally:
        stop.set()
        for worker in workers:
            worker.join(timeout=30)
    return statuses


def until(condition: Callable[[], object], *, timeout_s: float) -> None:
    """Return once `condition()` is true; fail the test if it is still false after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"still not true after {timeout_s} s"
        time.sleep(0.05)


def rows_stored(expected: int, timeout_s: float = 20.0) -> int:
    """The number of call rows once it reaches `expected` (or when `timeout_s` has passed)."""
    deadline = time.monotonic() + timeout_s
    while Call.objects.count() < expected and time.monotonic() < deadline:
        time.sleep(0.1)
    return Call.objects.count()


# ---------------------------------------------------------------------------- Redis


class RedisServer:
    """A throwaway redis-server on `port` (no persistence): `stop()` kills it, `start()` starts it again."""

    def __init__(self, port: int):
        self.port = port
        self.url = f"redis://127.0.0.1:{port}/0"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        command = [REDIS_SERVER, "--save", "", "--appendonly", "no", "--port", str(self.port), "--bind", "127.0.0.1"]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            try:
                with redis.Redis.from_url(self.url) as client:
                    client.ping()
                return
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=10)
            self.process = None

    def keys(self, pattern: str) -> list[bytes]:
        with redis.Redis.from_url(self.url) as client:
            return list(client.scan_iter(match=pattern))


@pytest.fixture
def redis_server():
    if not os.access(REDIS_SERVER, os.X_OK):
        pytest.skip(f"no redis-server at {REDIS_SERVER}")
    server = RedisServer(free_port())
    server.start()
    yield server
    server.stop()


def test_redis_stopped_and_restarted_under_load(gateway_worker_process, redis_server, fake_model, api_key):
    """Without Redis the worker serves from memory (its circuits per worker); when Redis is back, it uses it again."""
    fake_model("flaky", "echo+status=503")
    fake_model("backup", "echo")
    route_create("r", ["flaky", "backup"])
    url = gateway_worker_process(REDIS_URL=redis_server.url, ROUTERWEB_CIRCUIT_FAILURES="3")

    def outage() -> None:
        time.sleep(1.0)
        redis_server.stop()
        time.sleep(2.0)
        redis_server.start()
        # The worker tries Redis again within a second, and trips flaky's circuit there.
        until(lambda: redis_server.keys("*:rw:cb:m:flaky:open"), timeout_s=5.0)

    statuses = load_run(url, [api_key] * 4, {"model": "r", "messages": HELLO}, during=outage)
    assert set(statuses) == {200} and statuses[200] >= 20, statuses
    assert rows_stored(statuses[200]) == statuses[200]
    assert redis_server.keys("*:rw:cb:m:flaky:open"), "the circuit should be back in the shared state"


# ---------------------------------------------------------------------------- the database


def backends_terminate() -> int:
    """Kill every other connection to the test database, as a PostgreSQL restart does to its clients."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        return len(cursor.fetchall())


@pytest.mark.skipif(
    settings.DATABASES["default"]["ENGINE"] != "django.db.backends.postgresql" or not settings.REDIS_URL,
    reason="kills the database server's connections: PostgreSQL only (SQLite has no server to restart); "
    "announces the changes that make the worker use its dead connections through Redis",
)
def test_a_database_restart_under_load_answers_no_500_and_no_503(gateway_worker_process, fake_model, user):
    """Four clients, each with a key that has its own budget, keep several database threads busy with
    grants. Each kill is followed by a registry change announced in the worker's Redis: the worker
    reloads its registry at once and asks for new grants on its connections, which died."""
    model = fake_model("m", "echo", price=(1, 2))
    keys = [api_key_create(user=user, name=f"client {n}") for n in range(4)]
    for key, _ in keys:
        Budget.objects.create(api_key=key, limit_usd=Decimal(1000))
    url = gateway_worker_process(
        REDIS_URL=settings.REDIS_URL, CACHE_KEY_PREFIX=settings.CACHES["default"]["KEY_PREFIX"]
    )
    killed = []

    def restarts() -> None:
        for _ in range(3):
            time.sleep(1.0)
            killed.append(backends_terminate())
            ModelEndpoint.objects.get(pk=model.pk).save()  # a registry change: reload, and grants anew
        time.sleep(1.5)

    statuses = load_run(url, [raw for _, raw in keys], {"model": "m", "messages": HELLO}, during=restarts)
    assert all(killed), killed
    assert set(statuses) == {200} and statuses[200] >= 20, statuses
    assert rows_stored(statuses[200]) == statuses[200]


# ---------------------------------------------------------------------------- changes from other processes


def chat(url: str, api_key: str, model: str) -> httpx.Response:
    return httpx.post(
        f"{url}/v1/chat/completions",
        json={"model": model, "messages": HELLO},
        headers={"Authorization": f"Bearer {api_key}"},
        timeout=20,
    )


def chat_row(url: str, api_key: str, model: str) -> Call:
    """The call row of one chat with `model`, once the worker has stored it."""
    response = chat(url, api_key, model)
    assert response.status_code == 200, response.text
    request_id = response.headers["X-Request-Id"]
    deadline = time.monotonic() + 10
    while not Call.objects.filter(request_id=request_id).exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    return Call.objects.get(request_id=request_id)


def priced_at(call: Call, price: Price) -> Decimal:
    return cost_for_usage(
        price,
        prompt_tokens=call.prompt_tokens,
        cached_tokens=call.cached_tokens,
        completion_tokens=call.completion_tokens,
    )


def test_a_registry_imported_while_the_server_runs_is_in_force_1_5_s_later(
    gateway_worker_process, fake_upstream, fake_model, api_key, tmp_path
):
    """Without Redis: a new price prices the next call, a moved provider's new base URL is used."""
    fake_model("priced", "echo", price=(1, 2))
    moved = provider_create(name="moved", base_url=f"http://127.0.0.1:{free_port()}/v1", connect_timeout_s=1)
    model_create(name="moved-model", provider=moved, upstream_model="echo")
    # Its calls to the old address fail until the import is in force: they must not open its circuit.
    url = gateway_worker_process(REDIS_URL="", ROUTERWEB_CIRCUIT_FAILURES="1000")
    old_price = Price.objects.get(model__name="priced")
    before = chat_row(url, api_key, "priced")
    assert before.cost_usd == priced_at(before, old_price)
    assert chat(url, api_key, "moved-model").status_code == 502  # nothing listens at its old address

    registry = tmp_path / "registry.yaml"
    registry.write_text(
        "providers:\n"
        "  - name: moved\n"
        f"    base_url: {fake_upstream.url}/v1\n"
        "models:\n"
        "  - name: priced\n"
        "    provider: fake\n"
        "    upstream_model: echo\n"
        "    price: {input_per_mtok: 300, output_per_mtok: 700}\n"
    )
    manage_run("import_registry", str(registry), REDIS_URL="")  # a shell without Redis
    new_price = Price.objects.filter(model__name="priced").latest("effective_from")
    assert new_price.input_per_mtok == 300
    until(lambda: chat(url, api_key, "moved-model").status_code == 200, timeout_s=1.5)
    after = chat_row(url, api_key, "priced")
    assert after.cost_usd == priced_at(after, new_price) != priced_at(after, old_price)


def test_a_budget_created_by_a_script_is_enforced_within_about_a_second(
    gateway_worker_process, fake_model, api_key, user
):
    fake_model("priced", "echo", price=(1, 2))
    url = gateway_worker_process(REDIS_URL="")
    chat_row(url, api_key, "priced")
    Budget.objects.create(user=user, limit_usd=Decimal("0.000001"))  # this process is the script
    until(lambda: chat(url, api_key, "priced").status_code == 429, timeout_s=1.5)
    refused = chat(url, api_key, "priced")
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "budget_exceeded"
