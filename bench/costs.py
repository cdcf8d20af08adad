"""What cost tracking costs the gateway: throughput with cost rows and budgets on and off.

Usage: `.venv/bin/python -m bench.costs [--database-url URL] [--redis-url URL] [--duration 10] [--write-docs]`
(the issue's figure is on PostgreSQL + Redis: `--database-url postgres://postgres@127.0.0.1:5432/routerweb_bench
--redis-url redis://127.0.0.1:6379/3`).

Three modes, each in a fresh environment (bench.harness.BenchStack) and each under the same two
loads (wrk, non-streaming, one routerweb worker): an upstream that answers at once at concurrency 8,
where routerweb's CPU is the limit, and one that answers in 50 ms at concurrency 32:

- `no cost rows`: routerweb started through `bench.server_without_rows`, whose recorder drops every
  row: the gateway as if it tracked nothing (the reference);
- `cost rows`: the production server, one priced row per request (spool, batched insert, rollups);
- `cost rows + budgets`: the same with a monthly budget on the bench user and one on its API key,
  so every request also reserves its worst case on both (on PostgreSQL one statement from the
  event loop, in the request path) and settles them when its row is stored.

Target (issue 4): cost writing cuts throughput by at most 15% against the reference.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from datetime import UTC, datetime

from . import report
from .gateway import SCENARIOS, WARMUP_S, Runner
from .harness import BenchStack, budgets_create, redact_url, routerweb_command, routerweb_command_through

TARGET_DROP_PCT = 15.0


@dataclass(frozen=True)
class Load:
    model: str
    label: str
    concurrency: int


# Saturation (the upstream answers at once: routerweb's CPU is the limit, and every microsecond of
# bookkeeping shows), then a realistic upstream at a higher concurrency.
LOADS = (
    Load("fast", "upstream answers at once", 8),
    Load("slow50", "upstream answers in 50 ms", 32),
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
    load: Load
    mode: Mode
    rps: float
    p50_ms: float
    p99_ms: float
    cpu_ms: float
    rows: int


def run_mode(mode: Mode, args: argparse.Namespace) -> list[Result]:
    """Every load against one fresh stack in this mode, measured as the gateway bench measures."""
    command = routerweb_command_through("bench.server_without_rows") if mode.without_rows else routerweb_command
    results = []
    with BenchStack(database_url=args.database_url, redis_url=args.redis_url, routerweb_argv=command) as stack:
        if mode.budgets:
            budgets_create(stack.env)
        runner = Runner(stack, args.duration)
        for load in LOADS:
            scenario = next(s for s in SCENARIOS if s.name == load.model)
            runner.measure(scenario, "routerweb", load.concurrency, WARMUP_S)
            m = runner.measure(scenario, "routerweb", load.concurrency, args.duration)
            results.append(Result(load, mode, m.rps, m.p50_ms, m.p99_ms, m.cpu_ms_per_request, m.rows or 0))
            print(f"{load.model} c{load.concurrency}, {mode.label}: {m.rps:.0f} req/s", file=sys.stderr)
    return results


def drop_pct(result: Result, results: list[Result]) -> float:
    """How much lower `result`'s throughput is than the reference's under the same load, in percent."""
    reference = next(r for r in results if r.load == result.load and r.mode.without_rows)
    return (1 - result.rps / reference.rps) * 100


def section(results: list[Result], args: argparse.Namespace, argv: list[str]) -> str:
    database = redact_url(args.database_url) if args.database_url else "SQLite (fresh file)"
    lines = [
        "### Cost tracking overhead",
        "",
        f"- Command: `.venv/bin/python -m bench.costs {' '.join(argv)}`",
        f"- Date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; {report.machine_description()}",
        f"- Database: {database}; shared state: {redact_url(args.redis_url) if args.redis_url else 'local memory'}",
        f"- Load: wrk `-t2`, {args.duration:g} s per run after {WARMUP_S:g} s of warm-up, non-streaming, one worker."
        " Call rows counted per run: all of its answered requests plus the few in flight when wrk stopped.",
        "",
        "| load | mode | req/s | vs no cost rows | p50 ms | p99 ms | server CPU ms/req | call rows |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        rows = "–" if r.mode.without_rows else f"{r.rows}"
        cells = [f"{r.load.label}, c{r.load.concurrency}", r.mode.label, f"{r.rps:.0f}"]
        change = "reference" if r.mode.without_rows else f"{-drop_pct(r, results):+.1f}%"
        cells += [change, f"{r.p50_ms:.2f}", f"{r.p99_ms:.2f}", f"{r.cpu_ms:.3f}", rows]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    for load in LOADS:
        measured = [r for r in results if r.load == load and not r.mode.without_rows]
        for r in measured:
            verdict = "met" if drop_pct(r, results) <= TARGET_DROP_PCT else "not met"
            lines.append(
                f"- {load.label}, c{load.concurrency}, {r.mode.label}: throughput drop **{drop_pct(r, results):.1f}%**"
                f" (target ≤ {TARGET_DROP_PCT:g}%: **{verdict}**)."
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url")
    parser.add_argument("--redis-url")
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--write-docs", action="store_true")
    args = parser.parse_args(argv)
    results = [result for mode in MODES for result in run_mode(mode, args)]
    results.sort(key=lambda r: (LOADS.index(r.load), MODES.index(r.mode)))
    text = section(results, args, [a for a in argv if a != "--write-docs"])
    print(text)
    if args.write_docs:
        report.docs_write("costs" if args.database_url else "costs:sqlite", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
