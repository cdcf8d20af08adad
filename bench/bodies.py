"""What storing call bodies costs the gateway: throughput with body storage on for every call and off.

Usage: `.venv/bin/python -m bench.bodies [--database-url URL] [--redis-url URL] [--duration 3] [--rounds 20]
[--write-docs]` (the issue's figure is on PostgreSQL + Redis: `--database-url
postgres://postgres@127.0.0.1:5432/routerweb_bench --redis-url redis://127.0.0.1:6379/3`).

Two modes, each in a fresh environment of its own (bench.harness.BenchStack, side by side), under
bench.costs' two loads (wrk, non-streaming, one routerweb worker: an upstream that answers at once at
concurrency 8, where routerweb's CPU is the limit, and one that answers in 50 ms at concurrency 32):

- `bodies off`: the production server as installed (no body storage rule: the default);
- `bodies on`: the same with a global body storage rule "all calls", so every call's request and
  answer are redacted, bounded, spooled with its row and stored by the row writer (`CallBody`).

The modes take turns for `--rounds` rounds, in an order that rotates. Target (issue 19): storing
every call's body costs under 10% of the requests per second at saturation.
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from statistics import median

from . import report
from .costs import LOADS, Mode, Result, drops_pct, mode_runners, rounds_parser, rounds_run
from .gateway import WARMUP_S
from .harness import manage, redact_url

TARGET_DROP_PCT = 10.0
RULE_ALL = "from billing.body_models import BodyStorageRule; BodyStorageRule.objects.create(storage='all')"
MODES = (Mode("bodies_off", "bodies off"), Mode("bodies_on", "bodies on (every call)", setup=RULE_ALL))
BODIES_COUNT = "from billing.models import CallBody; print(CallBody.objects.count())"


def measure_rounds(args: argparse.Namespace) -> tuple[list[Result], dict[Mode, int]]:
    """Each round measures both loads in both modes (the order rotates); returns the results and the
    bodies each mode's database holds at the end."""
    with mode_runners(args, MODES) as runners:
        results = rounds_run(args, runners)
        bodies = {
            mode: int(manage(runner.stack.env, "shell", "--no-imports", "-c", BODIES_COUNT).split()[-1])
            for mode, runner in runners.items()
        }
    return results, bodies


def section(results: list[Result], bodies: dict[Mode, int], args: argparse.Namespace, argv: list[str]) -> str:
    database = redact_url(args.database_url) if args.database_url else "SQLite (fresh file)"
    shared = redact_url(args.redis_url) if args.redis_url else "local memory"
    lines = [
        "### Call bodies: storage on for every call vs off",
        "",
        f"- Command: `.venv/bin/python -m bench.bodies {' '.join(argv)}`",
        f"- Date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; {report.machine_description()}",
        f"- Database: {database} (one per mode); shared state: {shared}",
        f"- Load: wrk `-t2`, {args.rounds} rounds of {args.duration:g} s per load and mode after {WARMUP_S:g} s of"
        " warm-up, non-streaming, one worker per mode; medians over the rounds.",
        f"- Bodies stored at the end: {', '.join(f'{mode.label}: {count:,}' for mode, count in bodies.items())}.",
        "",
        "| load | mode | req/s | p50 ms | p99 ms | server CPU ms/req | call rows |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for load in LOADS:
        for mode in MODES:
            runs = [r for r in results if r.load == load and r.mode == mode]
            cells = [f"{load.label}, c{load.concurrency}", mode.label, f"{median(r.rps for r in runs):.0f}"]
            cells += [f"{median(r.p50_ms for r in runs):.2f}", f"{median(r.p99_ms for r in runs):.2f}"]
            cells += [f"{median(r.cpu_ms for r in runs):.3f}", f"{sum(r.rows for r in runs)}"]
            lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    for load in LOADS:
        drops = drops_pct(load, MODES[1], results, reference=MODES[0])
        drop = median(drops)
        verdict = "met" if drop < TARGET_DROP_PCT else "not met"
        each = ", ".join(f"{d:.1f}%" for d in drops)
        lines.append(
            f"- {load.label}, c{load.concurrency}: throughput drop with bodies **{drop:.1f}%**, the median of {each}"
            f" (target < {TARGET_DROP_PCT:g}%: **{verdict}**)."
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = rounds_parser(__doc__).parse_args(argv)
    results, bodies = measure_rounds(args)
    text = section(results, bodies, args, [a for a in argv if a != "--write-docs"])
    print(text)
    if args.write_docs:
        report.docs_write("bodies" if args.database_url else "bodies:sqlite", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
