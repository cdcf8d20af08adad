"""What cost tracking costs the gateway: throughput with cost rows and budgets on and off.

Usage: `.venv/bin/python -m bench.costs [--database-url URL] [--redis-url URL] [--duration 3] [--rounds 20]
[--write-docs]`
(the issue's figure is on PostgreSQL + Redis: `--database-url postgres://postgres@127.0.0.1:5432/routerweb_bench
--redis-url redis://127.0.0.1:6379/3`).

Three modes, each in a fresh environment of its own (bench.harness.BenchStack, all three started
side by side), each under the same two loads (wrk, non-streaming, one routerweb worker): an upstream
that answers at once at concurrency 8, where routerweb's CPU is the limit, and one that answers in
50 ms at concurrency 32. The modes take turns, for `--rounds` rounds:

- `no cost rows`: routerweb started through `bench.server_without_rows`, whose recorder drops every
  row: the gateway as if it tracked nothing (the reference);
- `cost rows`: the production server, one priced row per request (spool, then batches stored by the
  worker's row writer process: COPY, rollups);
- `cost rows + budgets`: the same with a monthly budget on the bench user and one on its API key,
  so every request also reserves its worst case on both (drawn from the worker's allowances,
  billing/budgets.py) and settles them when its row is stored.

Target (issue 4): cost writing cuts throughput by at most 15% against the reference.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from statistics import median, quantiles
from urllib.parse import urlsplit, urlunsplit

from . import report
from .gateway import SCENARIOS, WARMUP_S, Runner, wait_quiet
from .harness import BenchStack, budgets_create, manage, redact_url, routerweb_command, routerweb_command_through

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
    setup: str = ""  # Python run in its stack's `manage.py shell` before the rounds


MODES = (
    Mode("reference", "no cost rows", without_rows=True),
    Mode("rows", "cost rows"),
    Mode("budgets", "cost rows + budgets (user and key)", budgets=True),
)


@dataclass(frozen=True)
class Result:
    load: Load
    mode: Mode
    round: int
    rps: float
    p50_ms: float
    p99_ms: float
    cpu_ms: float
    rows: int


def mode_database_url(url: str | None, mode: Mode) -> str | None:
    """Each mode's stack gets a database of its own (all three run side by side): `<name>_<mode>`."""
    if url is None:
        return None
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"{parts.path}_{mode.key}"))


@contextlib.contextmanager
def mode_runners(args: argparse.Namespace, modes: tuple[Mode, ...]) -> Iterator[dict[Mode, Runner]]:
    """One stack per mode, side by side (idle but for the one measured), each prepared as its mode says."""
    with contextlib.ExitStack() as stacks:
        runners = {}
        for mode in modes:
            command = routerweb_command_through("bench.server_without_rows") if mode.without_rows else routerweb_command
            database_url = mode_database_url(args.database_url, mode)
            stack = stacks.enter_context(
                BenchStack(database_url=database_url, redis_url=args.redis_url, routerweb_argv=command)
            )
            if mode.budgets:
                budgets_create(stack.env)
            if mode.setup:
                manage(stack.env, "shell", "--no-imports", "-c", mode.setup)
            runners[mode] = Runner(stack, args.duration)
        yield runners


def rounds_run(args: argparse.Namespace, runners: dict[Mode, Runner]) -> list[Result]:
    """Each round measures every load in every mode, in an order that rotates from round to round: a
    machine that gets slower or faster during the bench (a shared VM does) shifts all modes alike."""
    modes = list(runners)
    results = []
    for number in range(args.rounds):
        for load in LOADS:
            scenario = next(s for s in SCENARIOS if s.name == load.model)
            for mode in modes[number % len(modes) :] + modes[: number % len(modes)]:
                runner = runners[mode]
                wait_quiet(runner.stack)
                runner.measure(scenario, "routerweb", load.concurrency, WARMUP_S)
                m = runner.measure(scenario, "routerweb", load.concurrency, args.duration)
                result = Result(load, mode, number, m.rps, m.p50_ms, m.p99_ms, m.cpu_ms_per_request, m.rows or 0)
                results.append(result)
                where = f"round {number + 1}, {load.model} c{load.concurrency}, {mode.label}"
                print(f"{where}: {m.rps:.0f} req/s", file=sys.stderr)
    return results


def rounds_parser(doc: str) -> argparse.ArgumentParser:
    """The options of a benchmark that measures modes side by side in rounds (`rounds_run`)."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--database-url")
    parser.add_argument("--redis-url")
    # Many short rounds: this VM's speed drifts within seconds, and only the median of many rounds holds;
    # short ones keep a round's modes close in time.
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--write-docs", action="store_true")
    return parser


def measure_rounds(args: argparse.Namespace) -> list[Result]:
    with mode_runners(args, MODES) as runners:
        return rounds_run(args, runners)


def drops_pct(load: Load, mode: Mode, results: list[Result], reference: Mode = MODES[0]) -> list[float]:
    """Per round, how much lower `mode`'s throughput is than `reference`'s in the same round, in percent."""
    drops = []
    for number in sorted({r.round for r in results}):
        same = {r.mode: r for r in results if r.load == load and r.round == number}
        drops.append((1 - same[mode].rps / same[reference].rps) * 100)
    return drops


MEDIANS = (("p50_ms", 2), ("p99_ms", 2), ("cpu_ms", 3))  # columns shown as the median over the rounds


def section(results: list[Result], args: argparse.Namespace, argv: list[str]) -> str:
    database = redact_url(args.database_url) if args.database_url else "SQLite (fresh file)"
    lines = [
        "### Cost tracking overhead",
        "",
        f"- Command: `.venv/bin/python -m bench.costs {' '.join(argv)}`",
        f"- Date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; {report.machine_description()}",
        f"- Database: {database} (one per mode, `_<mode>` appended to the name); shared state: "
        f"{redact_url(args.redis_url) if args.redis_url else 'local memory'}",
        f"- Load: wrk `-t2`, {args.rounds} rounds of {args.duration:g} s per load and mode, each after"
        f" {WARMUP_S:g} s of warm-up, non-streaming, one worker per mode. Figures are medians over the rounds;"
        " the drop is the median of each round's drop against the same round's reference. Call rows: summed over"
        " the rounds, every answered request plus the few in flight when wrk stopped.",
        "",
        "| load | mode | req/s | vs no cost rows | p50 ms | p99 ms | server CPU ms/req | call rows |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for load in LOADS:
        for mode in MODES:
            runs = [r for r in results if r.load == load and r.mode == mode]
            cells = [f"{load.label}, c{load.concurrency}", mode.label, f"{median(r.rps for r in runs):.0f}"]
            change = "reference" if mode.without_rows else f"{-median(drops_pct(load, mode, results)):+.1f}%"
            rows = "–" if mode.without_rows else f"{sum(r.rows for r in runs)}"
            cells += [change] + [f"{median(getattr(r, name) for r in runs):.{digits}f}" for name, digits in MEDIANS]
            lines.append("| " + " | ".join(cells + [rows]) + " |")
    lines.append("")
    for load in LOADS:
        for mode in MODES[1:]:
            drops = drops_pct(load, mode, results)
            drop = median(drops)
            low, _, high = quantiles(drops, n=4)
            verdict = "met" if drop <= TARGET_DROP_PCT else "not met"
            each = ", ".join(f"{d:.1f}%" for d in drops)
            lines.append(
                f"- {load.label}, c{load.concurrency}, {mode.label}: throughput drop **{drop:.1f}%** (half of the"
                f" rounds between {low:.1f}% and {high:.1f}%), the median of {each}"
                f" (target ≤ {TARGET_DROP_PCT:g}%: **{verdict}**)."
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = rounds_parser(__doc__).parse_args(argv)
    results = measure_rounds(args)
    text = section(results, args, [a for a in argv if a != "--write-docs"])
    print(text)
    if args.write_docs:
        report.docs_write("costs" if args.database_url else "costs:sqlite", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
