"""Dashboard benchmark: the spend dashboard's page and JSON endpoint over millions of call rows.

Usage: `.venv/bin/python -m bench.dashboard --rows 1000000 [--rows 10000000]
--database-url postgres://postgres@127.0.0.1:5432/routerweb_dash_bench [--requests 30] [--write-docs]`.

For each `--rows`: a fresh database (dropped afterwards; an existing one only when its name contains
"bench"), `migrate`, `generate_calls --rows N` (90 days, 60 users; its insert and rollup times are
reported), two users (staff, and a member who sees only their own calls), then routerweb with the
production command (`uvicorn … --workers 1`). Each scenario is requested `--requests` times in a row
over HTTP after 3 warm-ups, 30-day range, with and without filters; p50/p95/max are wall times
measured by the client. The CSV export of the last 7 days is streamed too, with the server's resident
memory sampled while it runs. `--write-docs` replaces the section between the
`<!-- bench:dashboard:start -->` and `<!-- bench:dashboard:end -->` markers of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import re
import shlex
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from statistics import quantiles

import httpx

from . import report
from .harness import (
    PYTHON,
    ROOT,
    BenchError,
    BenchSandbox,
    manage,
    pg_server_version,
    redact_url,
    routerweb_command,
    wait_ready,
)

TARGET_1M_P95_MS = 300.0
TARGET_10M_P95_MS = 1000.0
TARGET_WHATIF_P95_MS = 300.0  # issue 19: the what-if view as fast as the dashboard, at any size
WHATIF, WHATIF_PATH = "what-if JSON", "/dashboard/whatif.json"
TARGET_CALL_LIST_P95_MS = 300.0  # the call list (/calls/) and a call's page, at every size (issue 19)
STAFF, MEMBER, PASSWORD = "bench-staff", "bench-member", "bench-password-123"
WARMUP = 3


@dataclass(frozen=True)
class Scenario:
    name: str
    path: str
    params: dict[str, str]
    viewer: str = STAFF


@dataclass
class Timing:
    scenario: Scenario
    times_ms: list[float]
    status: int
    size: int

    @property
    def p50(self) -> float:
        return quantiles(self.times_ms, n=100, method="inclusive")[49]

    @property
    def p95(self) -> float:
        return quantiles(self.times_ms, n=100, method="inclusive")[94]


@dataclass
class SizeResult:
    rows: int
    generate_s: float
    insert_s: float
    rollup_s: float
    counts: dict[str, int]
    sizes: dict[str, str]
    raw_totals_ms: float
    timings: list[Timing] = field(default_factory=list)
    export: dict[str, float] = field(default_factory=dict)


# ---------------------------------------------------------------------------- set-up


def generate(env: dict[str, str], rows: int) -> tuple[float, float, float]:
    """Run generate_calls with its progress bar on this terminal; returns (total, insert, rollup) seconds."""
    command = [PYTHON, str(ROOT / "manage.py"), "generate_calls", "--rows", str(rows), "--seed", "1"]
    started = time.monotonic()
    result = subprocess.run(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True, check=False)
    total = time.monotonic() - started
    if result.returncode != 0:
        raise BenchError(f"generate_calls failed:\n{result.stdout}")
    print(result.stdout.strip())
    insert = float(re.search(r"inserted \d+ calls in ([\d.]+) s", result.stdout).group(1))
    rollup = float(re.search(r"rebuilt the rollups in ([\d.]+) s", result.stdout).group(1))
    return total, insert, rollup


BODIES_EVERY = 10  # one call in this many has its body stored (as with storage on for some keys or routes)
RARE_WORD_EVERY = 5000  # one stored body in this many mentions RARE_WORD
RARE_WORD = "zanzibar"
COMMON_WORD = "billing"  # in one stored body in five
TOPICS = ("billing", "routing", "caching", "latency", "budgets")


def bodies_generate(url: str) -> tuple[int, float]:
    """Store a body for one call in BODIES_EVERY, with words to search for (through the same GIN index as
    real bodies: migration 0011); returns how many and the seconds it took."""
    import psycopg

    topics = "ARRAY[" + ", ".join(f"'{topic}'" for topic in TOPICS) + "]"
    started = time.monotonic()
    with psycopg.connect(url) as conn:
        inserted = conn.execute(
            f"""
            INSERT INTO billing_callbody
                (created_at, request_id, request, answer, tool_calls, request_truncated, answer_truncated)
            SELECT created_at, request_id,
                jsonb_build_object(
                    'messages', jsonb_build_array(jsonb_build_object(
                        'role', 'user',
                        'content', 'question ' || (id % 997) || ' about ' || ({topics})[1 + id % {len(TOPICS)}]
                    )),
                    'parameters', jsonb_build_object('temperature', 0)
                ),
                'answer ' || id || ' ' || CASE WHEN id % ({BODIES_EVERY} * {RARE_WORD_EVERY}) = 0
                    THEN '{RARE_WORD}' ELSE 'plain' END,
                '[]'::jsonb, false, false
            FROM billing_call WHERE id % {BODIES_EVERY} = 0
            """
        ).rowcount
        conn.execute("ANALYZE billing_callbody")
    return inserted, time.monotonic() - started


def users_create(env: dict[str, str]) -> dict[str, str]:
    """The staff and member accounts; returns the member's API key, the heaviest user and a key id and route."""
    script = f"""
from django.contrib.auth import get_user_model
from django.db.models import Sum
from billing.models import CallRollup
from routing.models import ApiKey, Route
from routing.services import api_key_create
User = get_user_model()
User.objects.create_superuser({STAFF!r}, password={PASSWORD!r})  # sees everyone (view_all_spend)
heavy = CallRollup.objects.filter(period="day").values("user_id").annotate(c=Sum("calls")).order_by("-c")
user = User.objects.get(pk=heavy[0]["user_id"])
member = User.objects.get(pk=heavy[1]["user_id"])
member.username = {MEMBER!r}
member.set_password({PASSWORD!r})
member.save()
key = ApiKey.objects.filter(user=user).order_by("id").first()
from datetime import timedelta
from django.utils import timezone
from billing.models import Call
call = Call.objects.filter(created_at__lt=timezone.now() - timedelta(days=15)).order_by("-created_at").first()
route = Route.objects.order_by("name").first().name
print(user.username, key.id, route, api_key_create(user=member)[1], call.request_id)
"""
    user, key_id, route, member_key, request_id = manage(env, "shell", "--no-imports", "-c", script).split()[-5:]
    return {"user": user, "key": key_id, "route": route, "member_key": member_key, "request_id": request_id}


def database_stats(url: str) -> tuple[dict[str, int], dict[str, str], float]:
    """Row counts and table sizes, and the time of one 30-day totals query over the raw rows, for scale."""
    import psycopg

    with psycopg.connect(url) as conn:
        counts = {"calls": conn.execute("SELECT count(*) FROM billing_call").fetchone()[0]}
        counts["bodies"] = conn.execute("SELECT count(*) FROM billing_callbody").fetchone()[0]
        for period, n in conn.execute("SELECT period, count(*) FROM billing_callrollup GROUP BY period"):
            counts[f"{period} rollups"] = n
        counts["day rollups in 30 days"] = conn.execute(
            "SELECT count(*) FROM billing_callrollup WHERE period = 'day' "
            "AND bucket_start >= date_trunc('day', now()) - interval '29 days'"
        ).fetchone()[0]
        sizes = {
            table: conn.execute("SELECT pg_size_pretty(pg_total_relation_size(%s))", [table]).fetchone()[0]
            for table in ("billing_call", "billing_callrollup")
        }
        started = time.perf_counter()
        conn.execute(
            "SELECT count(*), sum(cost_usd), sum(prompt_tokens), sum(completion_tokens) FROM billing_call "
            "WHERE created_at >= date_trunc('day', now()) - interval '29 days'"
        ).fetchone()
        raw_ms = (time.perf_counter() - started) * 1000
    return counts, sizes, raw_ms


# ---------------------------------------------------------------------------- measuring


def logged_in(base_url: str, username: str) -> httpx.Client:
    client = httpx.Client(base_url=base_url, timeout=60)
    client.get("/accounts/login/")
    response = client.post(
        "/accounts/login/",
        data={"username": username, "password": PASSWORD, "csrfmiddlewaretoken": client.cookies["csrftoken"]},
        headers={"Referer": f"{base_url}/accounts/login/"},
    )
    if response.status_code != 302:
        raise BenchError(f"could not log in as {username}: HTTP {response.status_code}")
    return client


def measure(clients: dict[str, httpx.Client], scenario: Scenario, requests: int) -> Timing:
    client = clients[scenario.viewer]
    times = []
    status = size = 0
    for index in range(WARMUP + requests):
        started = time.perf_counter()
        response = client.get(scenario.path, params=scenario.params)
        elapsed = (time.perf_counter() - started) * 1000
        status, size = response.status_code, len(response.content)
        if status != 200:
            raise BenchError(f"{scenario.name}: HTTP {status}: {response.text[:300]}")
        if scenario.path == WHATIF_PATH and not response.json()["by_model"]:
            raise BenchError(f"{scenario.name}: no calls re-priced: the viewer sees none")
        if index >= WARMUP:
            times.append(elapsed)
    return Timing(scenario, times, status, size)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def measure_export(client: httpx.Client, pid: int) -> dict[str, float]:
    """Stream the export of the last 7 days (every call) while sampling the server's resident memory."""
    samples: list[float] = []
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            samples.append(rss_mb(pid))
            time.sleep(0.05)

    before = rss_mb(pid)
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started = time.perf_counter()
    rows = size = 0
    params = {"range": "7d"}
    with client.stream("GET", "/dashboard/export.csv", params=params) as response:
        for line in response.iter_lines():
            rows += 1
            size += len(line) + 1
    elapsed = time.perf_counter() - started
    done.set()
    sampler.join()
    return {
        "rows": rows - 1,
        "mb": size / 1e6,
        "seconds": elapsed,
        "rows_per_s": (rows - 1) / elapsed,
        "rss_before_mb": before,
        "rss_peak_mb": max(samples + [before]),
    }


def scenarios(extra: dict[str, str]) -> list[Scenario]:
    month = {"range": "30d"}
    return [
        Scenario("page, 30 days, no filter", "/dashboard/", month),
        Scenario("JSON, 30 days, no filter", "/dashboard/data.json", month),
        Scenario("page, 30 days, model", "/dashboard/", {**month, "model": "gpt-4o"}),
        Scenario("JSON, 30 days, model", "/dashboard/data.json", {**month, "model": "gpt-4o"}),
        Scenario("JSON, 30 days, user", "/dashboard/data.json", {**month, "user": extra["user"]}),
        Scenario("JSON, 30 days, API key", "/dashboard/data.json", {**month, "key": extra["key"]}),
        Scenario("JSON, 30 days, route", "/dashboard/data.json", {**month, "route": extra["route"]}),
        # No call matches (qwen-max never answers the coding route): the recent-calls table's worst case.
        Scenario(
            "page, 30 days, route + model matching nothing",
            "/dashboard/",
            {**month, "route": "coding", "model": "qwen-max"},
        ),
        Scenario("page, 30 days, as a member (own calls)", "/dashboard/", month, viewer=MEMBER),
        Scenario("JSON, 30 days, as a member (own calls)", "/dashboard/data.json", month, viewer=MEMBER),
        Scenario("JSON, today (hourly)", "/dashboard/data.json", {"range": "today"}),
        Scenario("JSON, this month", "/dashboard/data.json", {"range": "month"}),
        # What would it have cost? (billing/dashboard/whatif.py): one rollup scan, whatever the calls.
        Scenario(f"{WHATIF}, 30 days, no filter", WHATIF_PATH, {**month, "whatif": "gpt-4o-mini"}),
        Scenario(f"{WHATIF}, 30 days, route", WHATIF_PATH, {**month, "whatif": "gpt-4o", "route": extra["route"]}),
        Scenario(f"{WHATIF}, 30 days, as a member", WHATIF_PATH, {**month, "whatif": "gpt-4o-mini"}, viewer=MEMBER),
        Scenario(f"{WHATIF}, today (hour rollups)", WHATIF_PATH, {"range": "today", "whatif": "gpt-4o-mini"}),
        *call_list_scenarios(extra),
    ]


def call_list_scenarios(extra: dict[str, str]) -> list[Scenario]:
    """The call log (/calls/): the list with each kind of filter, a search by request id, one call's page."""
    month = {"range": "30d"}
    return [
        Scenario("call list, 30 days, no filter", "/calls/", month),
        Scenario("call list, 30 days, model", "/calls/", {**month, "model": "gpt-4o"}),
        Scenario("call list, 30 days, status error", "/calls/", {**month, "status": "error"}),
        Scenario("call list, 30 days, fallback", "/calls/", {**month, "status": "fallback"}),
        Scenario("call list, 30 days, estimated", "/calls/", {**month, "estimated": "yes"}),
        Scenario(
            "call list, 30 days, route + status rejected",
            "/calls/",
            {**month, "route": extra["route"], "status": "rejected"},
        ),
        Scenario("call list, 30 days, search a request id", "/calls/", {**month, "q": extra["request_id"]}),
        Scenario("call list, 30 days, search a rare word", "/calls/", {**month, "q": RARE_WORD}),
        Scenario("call list, 30 days, search a common word", "/calls/", {**month, "q": COMMON_WORD}),
        Scenario("call list, 30 days, as a member", "/calls/", month, viewer=MEMBER),
        Scenario("call page", f"/calls/{extra['request_id']}/", {}),
    ]


def run_size(rows: int, database_url: str, requests: int, keep_tmp: bool, only: str = "") -> SizeResult:
    with BenchSandbox(database_url=database_url, keep_tmp=keep_tmp) as sandbox:
        env = sandbox.env
        manage(env, "migrate", "--no-input", "--verbosity", "0")
        print(f"generating {rows:,} calls in {redact_url(sandbox.database.url)} …", flush=True)
        total, insert, rollup = generate(env, rows)
        bodies, bodies_s = bodies_generate(sandbox.database.url)
        print(f"stored {bodies:,} call bodies in {bodies_s:.1f} s", flush=True)
        extra = users_create(env)
        counts, sizes, raw_ms = database_stats(sandbox.database.url)
        server = sandbox.serve("routerweb", routerweb_command)
        wait_ready(server, "/accounts/login/")
        result = SizeResult(rows, total, insert, rollup, counts, sizes, raw_ms)
        clients = {STAFF: logged_in(server.url, STAFF), MEMBER: logged_in(server.url, MEMBER)}
        for scenario in (s for s in scenarios(extra) if only in s.name):
            timing = measure(clients, scenario, requests)
            print(f"  {scenario.name:<42} p50 {timing.p50:7.1f} ms  p95 {timing.p95:7.1f} ms", flush=True)
            result.timings.append(timing)
        result.export = measure_export(clients[STAFF], server.pid)
        print(f"  export: {result.export}")
        for client in clients.values():
            client.close()
        return result


# ---------------------------------------------------------------------------- report


def section(results: list[SizeResult], command: str, database_url: str) -> str:
    lines = [
        "## Dashboard at scale",
        "",
        "`bench/dashboard.py` fills a fresh PostgreSQL database with `generate_calls` (90 days, 60 users",
        "with 1–3 keys each, heavy and light users, the demo registry's 7 models and 3 routes plus an",
        "unpriced model, ~4% errors and rejections, fallbacks, streams) and times routerweb's dashboard",
        "over HTTP, one request at a time, 30-day range unless said otherwise, as a staff user with the",
        "spend permission unless said otherwise (the member sees only their own calls). Production command: `uvicorn",
        "routerweb.asgi:application --workers 1` (uvloop, httptools). Wall time as the client sees it,",
        "after 3 warm-up requests. One call in ten has its body stored (a question naming one of five",
        f"topics, a short answer; one answer in {RARE_WORD_EVERY:,} names a rare word) for the call list's text",
        "searches.",
        "",
        f"- Command: `{command}`",
        f"- Date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        f"- Machine: {report.machine_summary(('Django', 'uvicorn', 'psycopg'))};"
        f" PostgreSQL {pg_server_version(database_url)}, default settings"
        " (shared_buffers 128 MB, work_mem 4 MB).",
        "",
    ]
    header = "| scenario | " + " | ".join(f"{r.rows:,} calls: p50 / p95 ms" for r in results) + " |"
    lines += [header, "|---" * (len(results) + 1) + "|"]
    for index, timing in enumerate(results[0].timings):
        cells = [f"{r.timings[index].p50:.0f} / **{r.timings[index].p95:.0f}**" for r in results]
        lines.append(f"| {timing.scenario.name} | " + " | ".join(cells) + " |")
    lines += ["", "| | " + " | ".join(f"{r.rows:,} calls" for r in results) + " |"]
    lines.append("|---" * (len(results) + 1) + "|")
    rows = [
        ("slowest p95 (any scenario)", lambda r: f"**{max(t.p95 for t in r.timings):.0f} ms**"),
        ("`generate_calls` (COPY, then the rollups)", _generation),
        ("call rows / hour rollups / day rollups", _counts),
        ("day rollup rows a 30-day view reads", lambda r: f"{r.counts['day rollups in 30 days']:,}"),
        (f"stored call bodies (one call in {BODIES_EVERY})", lambda r: f"{r.counts['bodies']:,}"),
        ("table size: calls / rollups", lambda r: f"{r.sizes['billing_call']} / {r.sizes['billing_callrollup']}"),
        ("for scale: one 30-day totals query over the raw rows", lambda r: f"{r.raw_totals_ms:.0f} ms"),
        ("CSV export of the last 7 days", _export),
        ("server memory during that export", _export_memory),
    ]
    for label, cell in rows:
        lines.append(f"| {label} | " + " | ".join(cell(r) for r in results) + " |")
    lines.append("")
    for r in results:
        calls = [t.p95 for t in r.timings if t.scenario.path.startswith("/calls/")]
        if calls:
            verdict = "met" if max(calls) < TARGET_CALL_LIST_P95_MS else "**missed**"
            lines.append(
                f"- {r.rows:,} calls, call log: slowest p95 {max(calls):.0f} ms,"
                f" target under {TARGET_CALL_LIST_P95_MS:.0f} ms: {verdict}."
            )
        worst = max((t.p95 for t in r.timings if not t.scenario.path.startswith("/calls/")), default=None)
        if worst is not None:  # (--only may leave no dashboard scenario)
            target = TARGET_1M_P95_MS if r.rows <= 1_000_000 else TARGET_10M_P95_MS
            verdict = "met" if worst < target else "**missed**"
            lines.append(f"- {r.rows:,} calls: slowest p95 {worst:.0f} ms, target under {target:.0f} ms: {verdict}.")
        whatif = max((t.p95 for t in r.timings if t.scenario.path == WHATIF_PATH), default=None)
        if whatif is None:
            continue
        verdict = "met" if whatif < TARGET_WHATIF_P95_MS else "**missed**"
        lines.append(f"- {r.rows:,} calls, what-if: slowest p95 {whatif:.0f} ms, target under 300 ms: {verdict}.")
    return "\n".join(lines)


def _generation(r: SizeResult) -> str:
    return f"{r.generate_s:.0f} s ({r.insert_s:.0f} s + {r.rollup_s:.0f} s)"


def _counts(r: SizeResult) -> str:
    return f"{r.counts['calls']:,} / {r.counts.get('hour rollups', 0):,} / {r.counts.get('day rollups', 0):,}"


def _export(r: SizeResult) -> str:
    e = r.export
    return f"{e['rows']:,.0f} rows, {e['mb']:.0f} MB in {e['seconds']:.1f} s ({e['rows_per_s']:,.0f} rows/s)"


def _export_memory(r: SizeResult) -> str:
    return f"{r.export['rss_before_mb']:.0f} MB before, {r.export['rss_peak_mb']:.0f} MB at most"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, action="append", required=True, help="call rows (repeatable)")
    parser.add_argument("--database-url", required=True, help="postgres://… of a database to create and drop")
    parser.add_argument("--requests", type=int, default=30, help="timed requests per scenario (30)")
    parser.add_argument("--write-docs", action="store_true", help="replace the dashboard section of docs/benchmarks.md")
    parser.add_argument("--keep-tmp", action="store_true", help="keep the temp dir (server log)")
    parser.add_argument("--only", default="", help="time only the scenarios whose name contains this (e.g. what-if)")
    args = parser.parse_args(argv)
    if not args.database_url.startswith(("postgres://", "postgresql://")):
        parser.error("--database-url must be a PostgreSQL URL (the benchmark is about PostgreSQL at scale)")
    command = "python -m bench.dashboard " + shlex.join(argv if argv is not None else sys.argv[1:])
    try:
        results = [run_size(rows, args.database_url, args.requests, args.keep_tmp, args.only) for rows in args.rows]
    except BenchError as exc:
        print(f"bench failed: {exc}", file=sys.stderr)
        return 1
    text = section(results, command.replace(args.database_url, redact_url(args.database_url)), args.database_url)
    print()
    print(text)
    if args.write_docs:
        report.docs_write("dashboard", text)
        print(f"\nwrote {report.DOCS_PATH.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
