"""Shared fixtures: the fake upstream and routerweb itself on live loopback ports, keys and clean state.

Both servers run in this process (uvicorn in a thread), so the test database, the local-memory
cache and the call recorder are the same objects the tests look at. Tests that need separate worker
processes start them with `gateway_worker_process`.
"""

import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import openai
import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.cache import cache

from billing.budget_upkeep import budget_upkeep
from billing.budgets import budget_allowances
from billing.recorder import call_recorder
from routerweb.serve import server_command
from routing import admission
from routing.ratelimit import rate_limiter_build
from routing.runtime import runtime_installed
from routing.services import api_key_create
from routing.shared_state import shared_state
from testkit.fake_upstream import FakeUpstream
from testkit.live import LiveServer, free_port, redis_delete_prefix, serve_asgi
from tests.factories import model_create, provider_create

# A Redis database the unit tests that talk to Redis directly use (keys under their own prefixes).
REDIS_FOR_TESTS = "redis://127.0.0.1:6379/1"

REPO_ROOT = Path(__file__).resolve().parent.parent

pytest_plugins = ["tests.billing_fixtures"]  # the dashboard tests' data set: `world`, `calls`


def pytest_configure(config):
    settings.ROUTERWEB_SPOOL_DIR = Path(tempfile.mkdtemp(prefix="routerweb-test-spool-"))
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # fast logins in tests


@pytest.fixture(scope="session")
def fake_upstream():
    """The fake OpenAI-compatible upstream at `<url>/v1`; `.app` exposes its stats."""
    app = FakeUpstream(prefix="/v1")
    server = serve_asgi(app)
    server.app = app
    yield server
    server.stop()


@pytest.fixture(scope="session")
def gateway_server(django_db_setup, django_db_blocker) -> LiveServer:
    from routerweb.asgi import application

    server = serve_asgi(application)
    yield server
    server.stop()
    call_recorder().stop()


@pytest.fixture(autouse=True)
def clean_shared_state(request):
    """Each test starts with no registry snapshot, no circuit state and fresh fake-upstream stats."""
    runtime = runtime_installed()
    if runtime is not None:  # the in-process server's, once it has started
        runtime.registry.clear()
        runtime.ratelimiter = rate_limiter_build()  # fresh counters (on Redis: removed below)
    budget_allowances().clear()
    if settings.REDIS_URL:
        # Never FLUSHDB: only this run's keys (CACHE_KEY_PREFIX) are removed.
        redis_delete_prefix(settings.REDIS_URL, f"{settings.CACHES['default'].get('KEY_PREFIX', '')}:")
    else:
        cache.clear()
        shared_state().clear()
    if "fake_upstream" in request.fixturenames:
        request.getfixturevalue("fake_upstream").app.reset()
    yield


@pytest.fixture
def gateway(gateway_server, transactional_db) -> LiveServer:
    """routerweb on a live port, with a database whose writes the server sees."""
    yield gateway_server
    calls_settle()  # this test's rows land before its database is emptied
    budget_upkeep.return_all()  # and its budget allowances go back, as at a worker's shutdown


@pytest.fixture
def login(gateway):
    """`login(username, password)` → an httpx client logged in through the real login form.

    Like the page, it sends the CSRF token (from the csrftoken cookie) in the X-CSRFToken header.
    """
    clients: list[httpx.Client] = []

    def start(username: str, password: str) -> httpx.Client:
        http = httpx.Client(base_url=gateway.url, timeout=20)
        clients.append(http)
        form = http.get("/accounts/login/")
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form.text).group(1)
        credentials = {"username": username, "password": password, "csrfmiddlewaretoken": token}
        response = http.post("/accounts/login/", data={**credentials, "next": "/playground/"})
        assert response.status_code == 302 and response.headers["location"] == "/playground/", response.text
        http.headers["X-CSRFToken"] = http.cookies["csrftoken"]
        return http

    yield start
    for http in clients:
        http.close()


def calls_settle(timeout_s: float = 3.0) -> None:
    """Wait until no request is in flight on the in-process server (a streamed call is recorded just
    after its last byte reaches the client), then until the recorder has written every row."""
    runtime = runtime_installed()
    deadline = time.monotonic() + timeout_s
    while runtime is not None and runtime.calls_in_flight and time.monotonic() < deadline:
        time.sleep(0.01)
    # and until the answers to cache are stored and the rate limits corrected
    while (admission.background_tasks or (runtime and not runtime.ratelimiter.settled)) and time.monotonic() < deadline:
        time.sleep(0.01)
    call_recorder().flush()


@pytest.fixture
def user(transactional_db):
    return get_user_model().objects.create_user("alice", password="pw-alice-123")


@pytest.fixture
def api_key(user) -> str:
    _, raw_key = api_key_create(user=user, name="tests")
    return raw_key


@pytest.fixture
def fake_provider(fake_upstream, transactional_db):
    """A provider pointing at the fake upstream; models on it choose their behaviour by upstream id."""
    return provider_create(name="fake", base_url=f"{fake_upstream.url}/v1", read_timeout_s=5, connect_timeout_s=2)


@pytest.fixture
def fake_model(fake_provider):
    """`fake_model("name", "echo+status=503", price=(1, 2))` creates a model served by the fake upstream."""

    def create(name: str, upstream: str = "echo", **fields):
        return model_create(name=name, provider=fake_provider, upstream_model=upstream, **fields)

    return create


ANTHROPIC_KEY = "sk-ant-fake"  # the secret of `anthropic_provider`, in its environment variable only


@pytest.fixture
def anthropic_provider(fake_upstream, transactional_db, monkeypatch):
    """A provider of kind Anthropic on the fake upstream's Anthropic mode, its key in FAKE_ANTHROPIC_API_KEY."""
    monkeypatch.setenv("FAKE_ANTHROPIC_API_KEY", ANTHROPIC_KEY)
    return provider_create(
        name="fake-anthropic",
        base_url=f"{fake_upstream.url}/v1",
        api_format="anthropic",
        api_key_env="FAKE_ANTHROPIC_API_KEY",
        read_timeout_s=5,
        connect_timeout_s=2,
    )


@pytest.fixture
def anthropic_model(anthropic_provider):
    """`anthropic_model("name", "echo+cached=5")` creates a model served by the fake's Anthropic mode."""

    def create(name: str, upstream: str = "echo", **fields):
        return model_create(name=name, provider=anthropic_provider, upstream_model=upstream, **fields)

    return create


@pytest.fixture
def client(gateway, api_key) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=api_key, max_retries=0, timeout=20)


@pytest.fixture
def async_client(gateway, api_key) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{gateway.url}/v1", api_key=api_key, max_retries=0, timeout=20)


@pytest.fixture
def http(gateway, api_key) -> httpx.Client:
    """A plain HTTP client with the key set, for status codes and headers the SDK hides."""
    with httpx.Client(base_url=gateway.url, headers={"Authorization": f"Bearer {api_key}"}, timeout=20) as client:
        yield client


@pytest.fixture
def recorded_calls():
    """`recorded_calls()` returns the call rows, oldest first, once every request so far is recorded."""
    from billing.models import Call

    def fetch():
        calls_settle()
        return list(Call.objects.order_by("created_at", "id"))

    return fetch


def database_url_for_tests() -> str:
    """The test database as a DATABASE_URL, for processes the tests start (workers, management commands)."""
    db = settings.DATABASES["default"]
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{db['NAME']}"
    return f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


def manage_run(*args: str, **extra_env: str) -> subprocess.CompletedProcess:
    """`manage.py *args` in a process of its own, as from a shell beside the server: on the test database
    and this run's Redis keys (if any), `extra_env` on top. Raises CalledProcessError if it fails."""
    env = {**os.environ, "DATABASE_URL": database_url_for_tests(), "SECRET_KEY": "test-secret-key"}
    if settings.REDIS_URL:
        env["CACHE_KEY_PREFIX"] = settings.CACHES["default"]["KEY_PREFIX"]
    command = [sys.executable, "manage.py", *args]
    return subprocess.run(command, cwd=REPO_ROOT, env={**env, **extra_env}, capture_output=True, text=True, check=True)


@pytest.fixture
def gateway_worker_process(transactional_db):
    """Start routerweb worker processes (the production command, quieter) on the test database and a shared Redis."""
    processes: list[subprocess.Popen] = []
    prefix = f"routerweb-test-workers-{os.getpid()}-{time.time_ns()}"

    def start(**extra_env: str) -> str:
        port = free_port()
        env = {
            **os.environ,
            "DATABASE_URL": database_url_for_tests(),
            "REDIS_URL": os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0",
            "CACHE_KEY_PREFIX": prefix,
            "SECRET_KEY": "test-secret-key",
            "ROUTERWEB_SPOOL_DIR": str(settings.ROUTERWEB_SPOOL_DIR / f"worker-{port}"),
            **extra_env,
        }
        command = [*server_command(host="127.0.0.1", port=port), "--log-level", "warning"]
        processes.append(subprocess.Popen(command, cwd=REPO_ROOT, env=env))
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                httpx.get(f"{url}/v1/models", timeout=1)
                return url
            except httpx.TransportError:
                time.sleep(0.1)
        raise RuntimeError("worker did not start")

    start.processes = processes  # the Popen of each, in start order (for signals)
    yield start
    for process in processes:
        process.terminate()
    for process in processes:
        process.wait(timeout=10)
    if processes:
        redis_delete_prefix(os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0", prefix)
