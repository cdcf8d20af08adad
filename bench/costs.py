"""What cost tracking costs the gateway: throughput with cost rows and budgets on and off.

Usage: `.venv/bin/python -m bench.costs [--database-url URL] [--redis-url URL] [--duration 10] [--write-docs]`
(the issue's figure is on PostgreSQL + Redis: `--database-url postgres://postgres@127.0.0.1:5432/routerweb_bench
--redis-url redis://127.0.0.1:6379/3`).

Three runs of the same load (wrk, non-streaming, upstream answering at once, one routerweb worker),
each in a fresh environment (bench.harness.BenchStack):

- `no cost rows`: routerweb started through `bench.server_without_rows`, whose recorder drops every
  row: the gateway as if it tracked nothing (the reference);
- `cost rows`: the production server, one priced row per request (spool, batched insert, rollups);
- `cost rows + budgets`: the same with a monthly budget on the bench user and one on its API key,
  so every request also reserves its worst case on both (one conditional UPDATE each, in the
  request path) and settles them when its row is stored.

Target (issue 4): cost writing cuts throughput by at most 15% against the reference.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from . import report
from .gateway import request_body
from .harness import PYTHON, BenchStack, calls_count, manage, redact_url, routerweb_command
from .wrk import wrk_run

CONCURRENCY = 8
TARGET_DROP_PCT = 15.0
BUDGETS = (
    "from decimal import Decimal; from billing.models import Budget; from routing.models import ApiKey; "
    "key = ApiKey.objects.get(); "
    "Budget.objects.create(user=key.user, limit_usd=Decimal('1000000')); "
    "Budget.objects.create(api_key=key, limit_usd=Decimal('1000000'))"
)


@dataclass(frozen=True)
class Mode:
    key: str
    label: str
    without_rows: bool = False
    budgets: bool = False


MODES = (
    Mode("reference", "no cost rows", without_rows=True),
    Mode("rows", "cost rows"),
    Mode("budgets", "cost rows + budgets (user and key)", budgets=True),
)


@dataclass(frozen=True)
class Result:
    mode: Mode
    rps: float
    p50_ms: float
    p99_ms: float
    cpu_ms: float
    rows: int
    requests: int


def server_without_rows(port: int) -> list[str]:
    return [PYTHON, "-m", "bench.server_without_rows", *routerweb_command(port)[3:]]


def run_mode(mode: Mode, args: argparse.Namespace) -> Result:
    command = server_without_rows if mode.without_rows else routerweb_command
    with BenchStack(database_url=args.database_url, redis_url=args.redis_url, routerweb_argv=command) as stack:
        if mode.budgets:
            manage(stack.env, "shell", "--no-imports", "-c", BUDGETS)
            time.sleep(0.5)  # the registry version bump reaches the server through the shared state
        body_file = stack.tmp / "body.json"
        body_file.write_bytes(request_body("fast", stream=False))
        url = stack.routerweb.url + "/v1/chat/completions"
        wrk_run(url, body_file, api_key=stack.api_key, connections=CONCURRENCY, duration_s=2)  # warm-up
        cpu_before = stack.routerweb.cpu_seconds()
        result = wrk_run(url, body_file, api_key=stack.api_key, connections=CONCURRENCY, duration_s=args.duration)
        time.sleep(1.5)  # the recorder's last batches land before CPU and rows are read
        cpu_ms = (stack.routerweb.cpu_seconds() - cpu_before) * 1000 / max(result.requests, 1)
        return Result(
            mode, result.rps, result.p50_ms, result.p99_ms, cpu_ms, calls_count(stack.database), result.requests
        )


def section(results: list[Result], args: argparse.Namespace, argv: list[str]) -> str:
    reference = results[0].rps
    database = redact_url(args.database_url) if args.database_url else "SQLite (fresh file)"
    lines = [
        "### Cost tracking overhead",
        "",
        f"- Command: `.venv/bin/python -m bench.costs {' '.join(argv)}`",
        f"- Date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; {report.machine_description()}",
        f"- Database: {database}; shared state: {redact_url(args.redis_url) if args.redis_url else 'local memory'}",
        f"- Load: wrk `-t2 -c{CONCURRENCY}`, {args.duration:g} s, non-streaming, upstream answers at once, one worker.",
        "",
        "| mode | req/s | vs no cost rows | p50 ms | p99 ms | server CPU ms/req | call rows |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        change = (r.rps / reference - 1) * 100
        rows = "–" if r.mode.without_rows else f"{r.rows}"
        cells = [r.mode.label, f"{r.rps:.0f}", f"{change:+.1f}%", f"{r.p50_ms:.2f}", f"{r.p99_ms:.2f}"]
        lines.append("| " + " | ".join([*cells, f"{r.cpu_ms:.3f}", rows]) + " |")
    worst = min((r.rps / reference - 1) * 100 for r in results[1:])
    verdict = "met" if -worst <= TARGET_DROP_PCT else "not met"
    lines += [
        "",
        f"- Largest throughput drop from cost tracking: **{-worst:.1f}%** "
        f"(target ≤ {TARGET_DROP_PCT:g}%: **{verdict}**).",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url")
    parser.add_argument("--redis-url")
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--write-docs", action="store_true")
    args = parser.parse_args(argv)
    results = []
    for mode in MODES:
        results.append(run_mode(mode, args))
        print(f"{mode.label}: {results[-1].rps:.0f} req/s, {results[-1].cpu_ms:.3f} ms CPU/req", file=sys.stderr)
    text = section(results, args, [a for a in argv if a != "--write-docs"])
    print(text)
    if args.write_docs:
        report.docs_write("costs:postgres" if args.database_url else "costs:sqlite", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
