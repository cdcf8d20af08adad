"""An isolated routerweb for benchmarks: temp dir, fresh database, registry, API key and the two servers.

`BenchSandbox` is a context manager. On entry it creates a temp dir, a fresh database (a SQLite file in
the temp dir, or a new PostgreSQL database named by `database_url`) and the environment of every Django
process of the run; `serve` starts a server in it. On exit (also on Ctrl-C or error) it stops the
servers, drops the PostgreSQL database it created, deletes its Redis keys and the temp dir.

`BenchStack`, the gateway benchmarks' sandbox, also migrates the database, imports a registry whose
provider `fake` points at a fake upstream it starts (`python -m testkit.fake_upstream`), creates a user
and an API key, and starts routerweb under uvicorn.

Nothing else on the machine is touched: the settings come from the environment the sandbox builds, never
from the developer's `.env` or `db.sqlite3`.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

from routerweb.serve import server_command, uvicorn_args
from testkit.live import free_port, redis_delete_prefix

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
HOST = "127.0.0.1"
BENCH_USER = "bench"
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 15.0

# Models of the benchmark registry: name -> upstream model id (the fake upstream's directives).
MODELS = {
    "fast": "echo",
    "slow50": "echo+latency=50",
    "stream50": "echo+latency=50+words=16",
    "stream16": "echo+words=16",  # bench.anthropic's OpenAI-compatible stream
}
# Models of the provider `fake-anthropic` (`api_format: anthropic`, the fake upstream's Anthropic mode).
ANTHROPIC_MODELS = {
    "claude-fast": "claude",
    "claude-stream": "claude+words=16",
}
ANTHROPIC_KEY_VARIABLE = "BENCH_ANTHROPIC_API_KEY"

# Settings a developer's environment or `.env` might set, pinned to their defaults: settings.py reads
# `.env` only for variables the environment leaves unset, so removing them would let `.env` decide.
PINNED_SETTINGS = {
    "DB_POOL_MAX_SIZE": "20",
    "ROUTERWEB_MAX_BODY_BYTES": str(4 * 1024 * 1024),
    "ROUTERWEB_CIRCUIT_FAILURES": "3",
    "ROUTERWEB_CIRCUIT_OPEN_S": "30",
    "BEHIND_HTTPS_PROXY": "0",
    "SECURE_COOKIES": "0",
    "SECURE_SSL_REDIRECT": "0",
    "ROUTERWEB_DEMO_PROVIDER": "0",
}

# A command line for routerweb: (port) -> argv. The default is the production command.
ServerCommand = Callable[[int], list[str]]


class BenchError(RuntimeError):
    """The benchmark environment could not be set up; the message says which step failed and why."""


# ---------------------------------------------------------------------------- database


@dataclass
class Database:
    """The benchmark's database: `url` is what DATABASE_URL gets; `created` means we must drop it."""

    url: str
    kind: str  # "sqlite" or "postgres"
    created: bool = False

    @property
    def label(self) -> str:
        if self.kind == "sqlite":
            return "SQLite (fresh file in a temp dir, WAL)"
        return f"PostgreSQL {pg_server_version(self.url)} (fresh database {_pg_dbname(self.url)!r})"


def database_prepare(database_url: str | None, tmp: Path) -> Database:
    """A fresh, empty database: a SQLite file in `tmp`, or a newly created PostgreSQL database.

    A PostgreSQL database that already exists is dropped first only when its name contains "bench"
    (a leftover of an interrupted run); any other existing database is refused, never touched.
    """
    if not database_url:
        return Database(url=f"sqlite:///{tmp / 'bench.sqlite3'}", kind="sqlite")
    scheme = urllib.parse.urlsplit(database_url).scheme
    if scheme.startswith("sqlite"):
        return Database(url=database_url, kind="sqlite")
    if scheme not in ("postgres", "postgresql", "pgsql"):
        raise BenchError(f"unsupported --database-url scheme {scheme!r} (use sqlite:// or postgres://)")
    _pg_create(database_url)
    return Database(url=database_url, kind="postgres", created=True)


def database_drop(database: Database) -> None:
    """Drop the PostgreSQL database if this run created it (SQLite files go with the temp dir)."""
    if database.kind == "postgres" and database.created:
        with _pg_admin(database.url) as admin:
            admin.execute(_drop_sql(_pg_dbname(database.url)))
        database.created = False


def calls_count(database: Database) -> int:
    """Rows in the `billing_call` table, read directly (not through the server under test)."""
    if database.kind == "sqlite":
        import sqlite3

        path = database.url.removeprefix("sqlite:///")
        with contextlib.closing(sqlite3.connect(path, timeout=20)) as conn:
            return conn.execute("SELECT count(*) FROM billing_call").fetchone()[0]
    import psycopg

    with psycopg.connect(database.url) as conn:
        return conn.execute("SELECT count(*) FROM billing_call").fetchone()[0]


def _pg_dbname(url: str) -> str:
    name = urllib.parse.unquote(urllib.parse.urlsplit(url).path.lstrip("/"))
    if not name:
        raise BenchError(f"--database-url needs a database name: {redact_url(url)}")
    return name


@contextlib.contextmanager
def _pg_admin(url: str) -> Iterator[Any]:
    """An autocommit connection to the server's `postgres` database (CREATE/DROP DATABASE need one)."""
    import psycopg
    from psycopg.conninfo import make_conninfo

    with psycopg.connect(make_conninfo(url, dbname="postgres"), autocommit=True) as conn:
        yield conn


def _drop_sql(name: str) -> Any:
    from psycopg import sql

    return sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))


def _pg_create(url: str) -> None:
    from psycopg import sql

    name = _pg_dbname(url)
    try:
        with _pg_admin(url) as admin:
            exists = admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone()
            if exists and "bench" not in name:
                raise BenchError(f"database {name!r} already exists; the bench only drops databases named *bench*")
            if exists:
                admin.execute(_drop_sql(name))
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    except BenchError:
        raise
    except Exception as exc:  # psycopg.Error, or the driver missing
        raise BenchError(f"cannot create PostgreSQL database {name!r} at {redact_url(url)}: {exc}") from exc


def pg_server_version(url: str) -> str:
    """The PostgreSQL server's version ("15.20"), "?" when it cannot be asked."""
    try:
        with _pg_admin(url) as admin:
            return admin.execute("SHOW server_version").fetchone()[0].split()[0]
    except Exception:
        return "?"


def redact_url(url: str) -> str:
    """`url` without its password, for logs and docs."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


# ---------------------------------------------------------------------------- django set-up


def django_env(tmp: Path, database: Database, redis_url: str | None, cache_prefix: str) -> dict[str, str]:
    """The environment of every Django process of the run: isolated settings, nothing from `.env`."""
    env = {**os.environ, **PINNED_SETTINGS}
    env.update(
        DJANGO_SETTINGS_MODULE="routerweb.settings",
        SECRET_KEY=secrets.token_urlsafe(50),
        DEBUG="0",
        LOG_LEVEL="WARNING",
        ALLOWED_HOSTS="127.0.0.1,localhost",
        DATABASE_URL=database.url,
        REDIS_URL=redis_url or "",
        CACHE_KEY_PREFIX=cache_prefix,
        ROUTERWEB_SPOOL_DIR=str(tmp / "spool"),
        ROUTERWEB_PUBLIC_URL=f"http://{HOST}:1",
        PYTHONUNBUFFERED="1",
    )
    env[ANTHROPIC_KEY_VARIABLE] = "bench-anthropic-key"  # the fake's Anthropic mode wants a key
    return env


BUDGETS_CREATE = (
    "from decimal import Decimal; from billing.models import Budget; from routing.models import ApiKey; "
    "key = ApiKey.objects.get(); "
    "Budget.objects.create(user=key.user, limit_usd=Decimal('1000000')); "
    "Budget.objects.create(api_key=key, limit_usd=Decimal('1000000'))"
)


def budgets_create(env: dict[str, str]) -> None:
    """A monthly budget (far from its limit) on the bench user and one on its API key: every request
    then reserves its worst case on both and settles them when its row is stored."""
    manage(env, "shell", "--no-imports", "-c", BUDGETS_CREATE)
    time.sleep(0.5)  # the registry version bump reaches the server through the shared state


def manage(env: dict[str, str], *args: str) -> str:
    """Run `manage.py ARGS` in the bench environment; returns stdout, raises BenchError with stderr."""
    result = subprocess.run(
        [PYTHON, str(ROOT / "manage.py"), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if result.returncode != 0:
        raise BenchError(f"manage.py {' '.join(args)} failed:\n{result.stderr.strip() or result.stdout.strip()}")
    return result.stdout


def registry_yaml(upstream_url: str) -> str:
    """The benchmark registry: provider `fake` (no API key) and the models of MODELS, provider
    `fake-anthropic` (the same fake in its Anthropic mode) and those of ANTHROPIC_MODELS, with a price.

    JSON is valid YAML, so the file is written as JSON (no quoting questions for `echo+latency=50`).
    """
    price = {"input_per_mtok": 1, "output_per_mtok": 2}
    data = {
        "providers": [
            {"name": "fake", "base_url": upstream_url, "timeout_s": 30, "connect_timeout_s": 5},
            {
                "name": "fake-anthropic",
                "api_format": "anthropic",
                "base_url": upstream_url,
                "api_key_env": ANTHROPIC_KEY_VARIABLE,
                "timeout_s": 30,
                "connect_timeout_s": 5,
            },
        ],
        "models": [
            *(
                {"name": name, "provider": "fake", "upstream_model": upstream, "price": price}
                for name, upstream in MODELS.items()
            ),
            *(
                {"name": name, "provider": "fake-anthropic", "upstream_model": upstream, "price": price}
                for name, upstream in ANTHROPIC_MODELS.items()
            ),
        ],
    }
    return json.dumps(data, indent=2)


def django_prepare(env: dict[str, str], tmp: Path, upstream_url: str) -> str:
    """Migrate, import the registry, create the bench user and its API key; returns the raw key."""
    manage(env, "migrate", "--no-input", "--verbosity", "0")
    registry_file = tmp / "registry.yaml"
    registry_file.write_text(registry_yaml(upstream_url), encoding="utf-8")
    manage(env, "import_registry", str(registry_file))
    create_user = (
        "from django.contrib.auth import get_user_model; "
        f"get_user_model().objects.create_user({BENCH_USER!r}, password=None)"
    )
    manage(env, "shell", "--no-imports", "-c", create_user)
    return api_key_create(env, BENCH_USER, "bench")


def api_key_create(env: dict[str, str], username: str, name: str) -> str:
    """A new API key of `username` named `name`; returns the raw key (the command's last line)."""
    return manage(env, "createapikey", username, "--name", name).strip().splitlines()[-1].strip()


# ---------------------------------------------------------------------------- servers


def routerweb_command(port: int) -> list[str]:
    """The production command line (as `make run`), one worker, on `port`."""
    return server_command(host=HOST, port=port)


def routerweb_command_through(*wrapper: str) -> ServerCommand:
    """The production command line run by a bench module that hands the uvicorn arguments on to uvicorn:
    `python -m WRAPPER... routerweb.asgi:application --host … --port PORT …`."""

    def command(port: int) -> list[str]:
        return [PYTHON, "-m", *wrapper, *uvicorn_args(host=HOST, port=port)]

    return command


def upstream_command(port: int) -> list[str]:
    return [PYTHON, "-m", "testkit.fake_upstream", "--host", HOST, "--port", str(port)]


@dataclass
class Server:
    """A server subprocess; its output goes to `log_path`."""

    name: str
    process: subprocess.Popen
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def pid(self) -> int:
        return self.process.pid

    def cpu_seconds(self) -> float:
        """CPU time (user + system, all threads) the process and its children (routerweb's row writer)
        have used so far, from /proc."""
        return process_tree_cpu_seconds(self.process.pid)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        """SIGTERM (graceful: routerweb flushes its call recorder), then SIGKILL after STOP_TIMEOUT_S."""
        if self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def process_tree_cpu_seconds(pid: int) -> float:
    """CPU seconds of `pid`, of its children that ended, and of its live descendants."""
    try:
        fields = _stat_fields(pid)
    except FileNotFoundError:
        return 0.0
    own = sum(int(v) for v in fields[11:15]) / os.sysconf("SC_CLK_TCK")  # utime, stime, cutime, cstime
    return own + sum(process_tree_cpu_seconds(child) for child in _children(pid))


def _stat_fields(pid: int) -> list[str]:
    """The fields of /proc/PID/stat after the command name (which may hold spaces)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat[stat.rindex(")") + 2 :].split()


def _children(pid: int) -> list[int]:
    children = []
    with contextlib.suppress(OSError):  # the process may end while it is read
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):
                children += [int(child) for child in (task / "children").read_text().split()]
    return children


def machine_cpu_jiffies() -> tuple[int, int]:
    """(busy, total) CPU time of the whole machine in clock ticks, from the first line of /proc/stat."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    total = sum(fields[:8])  # guest time is already counted in user
    return total - idle, total


def server_start(name: str, argv: list[str], port: int, env: dict[str, str], log_dir: Path) -> Server:
    """Start a server in its own session, so that Ctrl-C reaches only the bench, which stops it in order."""
    log_path = log_dir / f"{name}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            argv,
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    return Server(name=name, process=process, port=port, log_path=log_path)


def wait_ready(server: Server, path: str, headers: dict[str, str] | None = None) -> None:
    """Poll GET `path` until it answers 200; raises BenchError with the server's log if it never does."""
    request = urllib.request.Request(server.url + path, headers=headers or {})
    deadline = time.monotonic() + START_TIMEOUT_S
    last_error = ""
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            break
        try:
            with urllib.request.urlopen(request, timeout=2) as response:
                if response.status == 200:
                    return
        except urllib.error.HTTPError as exc:
            last_error = f"HTTP {exc.code}: {exc.read()[:300]!r}"
        except OSError as exc:
            last_error = str(exc)
        time.sleep(0.1)
    raise BenchError(f"{server.name} did not answer GET {path} ({last_error}); its log:\n{server.log_tail()}")


def http_json(url: str, method: str = "GET") -> Any:
    """A small JSON request with the standard library (for the fake upstream's /_fake endpoints)."""
    request = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


# ---------------------------------------------------------------------------- the sandbox and the stack


@dataclass
class BenchSandbox:
    """A temp dir, a fresh database and the Django environment on them; `with BenchSandbox(...) as sandbox:`.

    Servers started with `serve` are stopped on exit, before the database is dropped and the temp
    dir deleted (and this run's Redis keys with it).
    """

    database_url: str | None = None
    redis_url: str | None = None
    keep_tmp: bool = False
    tmp: Path = field(init=False)
    database: Database = field(init=False)
    cache_prefix: str = field(init=False)
    env: dict[str, str] = field(init=False)
    _cleanup: contextlib.ExitStack = field(init=False)

    def __enter__(self) -> Self:
        self._cleanup = contextlib.ExitStack()
        try:
            self._start()
        except BaseException:
            self._cleanup.close()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._cleanup.close()

    def serve(self, name: str, command: ServerCommand) -> Server:
        """Start `command` on a free port in the sandbox's environment (log in the temp dir), stopped on exit."""
        port = free_port()
        server = server_start(name, command(port), port, self.env, self.tmp)
        self._cleanup.callback(server.stop)
        return server

    def _start(self) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="routerweb-bench-"))
        if not self.keep_tmp:
            self._cleanup.callback(shutil.rmtree, self.tmp, ignore_errors=True)
        self.database = database_prepare(self.database_url, self.tmp)
        self._cleanup.callback(database_drop, self.database)
        self.cache_prefix = f"bench-{secrets.token_hex(4)}"
        if self.redis_url:
            self._cleanup.callback(redis_delete_prefix, self.redis_url, f"{self.cache_prefix}:")
        self.env = django_env(self.tmp, self.database, self.redis_url, self.cache_prefix)


@dataclass
class BenchStack(BenchSandbox):
    """Everything one gateway benchmark run needs; use as `with BenchStack(...) as stack:`.

    On top of the sandbox: the fake upstream, the benchmark registry, the bench user's API key and
    routerweb, started with `routerweb_argv`.
    """

    routerweb_argv: ServerCommand = routerweb_command
    api_key: str = field(init=False)
    upstream: Server = field(init=False)
    routerweb: Server = field(init=False)

    @property
    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}

    def upstream_requests(self) -> int:
        """Chat requests the fake upstream has received so far (its own counter)."""
        return int(http_json(self.upstream.url + "/_fake/stats")["requests"])

    def _start(self) -> None:
        super()._start()
        self.upstream = self.serve("fake-upstream", upstream_command)
        wait_ready(self.upstream, "/models")
        self.api_key = django_prepare(self.env, self.tmp, self.upstream.url)
        self.routerweb = self.serve("routerweb", self.routerweb_argv)
        wait_ready(self.routerweb, "/v1/models", self.auth_headers)
