"""Gateway benchmark: routerweb in front of the fake upstream vs the fake upstream alone.

Usage: `.venv/bin/python -m bench.gateway [--database-url URL] [--redis-url URL] [--duration 10] [--quick]
[--target-runs 5] [--write-docs]`. See docs/benchmarks.md for what is measured and the latest results.

Everything runs in a throwaway environment (bench.harness.BenchStack). Per concurrency and scenario
the load goes once straight to the fake upstream and once through routerweb. The target server's CPU
time (with its child processes: routerweb's row writer) is read from /proc before the run and after a
settle pause (so that storing the run's call rows is counted too) and divided by the requests
completed. The target's scenario (50 ms upstream, concurrency 8) runs `--target-runs` times and is
judged on the median. Exit status: 0, or 2 when the call rows do not account for the requests sent
(see `BillingCheck`), 1 when the set-up failed.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import signal
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from . import report
from .harness import HOST, ROOT, BenchError, BenchStack, Server, calls_count, machine_cpu_jiffies, redact_url
from .report import BillingCheck, LoadResult, Measurement, RunInfo, Scenario
from .sse_client import StreamTarget, percentile, stream_load
from .wrk import WrkError, wrk_run

SCENARIOS = (
    Scenario("fast", "non-streaming, upstream 0 ms", model="fast", upstream_model="echo", stream=False),
    Scenario("slow50", "non-streaming, upstream 50 ms", model="slow50", upstream_model="echo+latency=50", stream=False),
    Scenario(
        "stream50",
        "streaming, upstream 50 ms, 16 chunks",
        model="stream50",
        upstream_model="echo+latency=50+words=16",
        stream=True,
    ),
)
CONCURRENCIES = (8, 32)
TARGETS = ("direct", "routerweb")
SETTLE_S = 1.5  # after a run: the recorder hands rows over every 0.5 s, so they are stored before CPU is read
FINAL_WAIT_S = 2.0
WARMUP_S = 2.0
QUIET_PCT = 5.0  # before each run, wait until other processes use less than this share of the CPUs ...
QUIET_TIMEOUT_S = 120.0  # ... but no longer than this
MESSAGES = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "Say hello to the benchmark in a few words, please."},
]


def request_body(model: str, stream: bool) -> bytes:
    """The chat request both targets get (a stream asks for usage, as routerweb always does upstream)."""
    body: dict = {"model": model, "messages": MESSAGES, "max_tokens": 64}
    if stream:
        body |= {"stream": True, "stream_options": {"include_usage": True}}
    return json.dumps(body).encode()


@dataclass
class Totals:
    """Requests through routerweb over the whole run (warm-up included), for the final row count."""

    sent: int = 0
    completed: int = 0
    forwarded: int = 0

    def add(self, m: Measurement) -> None:
        self.sent += m.sent
        self.completed += m.requests
        self.forwarded += m.forwarded or 0


class Runner:
    """Runs the load of one scenario against one target and measures it."""

    def __init__(self, stack: BenchStack, duration_s: float, retries: int = 0) -> None:
        self.stack = stack
        self.duration_s = duration_s
        self.retries = retries
        self.totals = Totals()

    def server(self, target: str) -> Server:
        return self.stack.routerweb if target == "routerweb" else self.stack.upstream

    def warm_up(self) -> None:
        """Open the connection pools and load the registry: a short run of each kind (not reported)."""
        for scenario in SCENARIOS:
            self.measure(scenario, "routerweb", 8, WARMUP_S)
        self.measure(SCENARIOS[0], "direct", 8, WARMUP_S)

    def measure_undisturbed(self, scenario: Scenario, target: str, concurrency: int) -> Measurement:
        """`measure()` after waiting for a quiet machine; a run that other processes disturbed is repeated
        up to `retries` times (the last attempt is kept, and flagged in the report, if none was quiet)."""
        for attempt in range(self.retries + 1):
            wait_quiet(self.stack)
            m = self.measure(scenario, target, concurrency, self.duration_s)
            if m.other_busy_pct <= report.DISTURBED_PCT or attempt == self.retries:
                return m
            print(f"    disturbed ({m.other_busy_pct:.0f}% of the CPUs used by others); again", file=sys.stderr)
        raise AssertionError("unreachable")

    def measure(self, scenario: Scenario, target: str, concurrency: int, duration_s: float) -> Measurement:
        """One load run; counters are read before it and after SETTLE_S, so late work is included."""
        server, routed = self.server(target), target == "routerweb"
        rows_before = calls_count(self.stack.database) if routed else 0
        upstream_before = self.stack.upstream_requests()
        cpu_before, machine_before = server.cpu_seconds(), cpu_snapshot(self.stack)
        load = self._load(scenario, target, concurrency, duration_s)
        busy_pct, other_pct = machine_shares(machine_before, cpu_snapshot(self.stack))
        time.sleep(SETTLE_S)
        cpu_s = server.cpu_seconds() - cpu_before
        m = Measurement(
            scenario=scenario,
            target=target,
            concurrency=concurrency,
            cpu_ms_per_request=cpu_s * 1000 / max(1, load.requests),
            machine_busy_pct=busy_pct,
            other_busy_pct=other_pct,
            forwarded=self.stack.upstream_requests() - upstream_before if routed else None,
            rows=calls_count(self.stack.database) - rows_before if routed else None,
            **vars(load),
        )
        if routed:
            self.totals.add(m)
        return m

    def _load(self, scenario: Scenario, target: str, concurrency: int, duration_s: float) -> LoadResult:
        if scenario.stream:
            return self._streams(scenario, target, concurrency, duration_s)
        return self._wrk(scenario, target, concurrency, duration_s)

    def _url_and_body(self, scenario: Scenario, target: str) -> tuple[str, bytes, str]:
        if target == "routerweb":
            url = self.stack.routerweb.url + "/v1/chat/completions"
            return url, request_body(scenario.model, scenario.stream), self.stack.api_key
        url = self.stack.upstream.url + "/chat/completions"
        return url, request_body(scenario.upstream_model, scenario.stream), ""

    def _wrk(self, scenario: Scenario, target: str, concurrency: int, duration_s: float) -> LoadResult:
        url, body, api_key = self._url_and_body(scenario, target)
        body_file = self.stack.tmp / f"body-{scenario.name}-{target}.json"
        body_file.write_bytes(body)
        r = wrk_run(url, body_file, api_key=api_key, connections=concurrency, duration_s=duration_s)
        return LoadResult(r.requests, r.sent, r.errors, r.rps, r.p50_ms, r.p99_ms)

    def _streams(self, scenario: Scenario, target: str, concurrency: int, duration_s: float) -> LoadResult:
        url, body, api_key = self._url_and_body(scenario, target)
        server = self.server(target)
        spec = StreamTarget(HOST, server.port, url.removeprefix(server.url), body, api_key)
        stats = stream_load(spec, concurrency=concurrency, duration_s=duration_s)
        if stats.errors:
            print(f"    {stats.errors} stream errors, first: {stats.first_error}", file=sys.stderr)
        return LoadResult(
            requests=stats.completed,
            sent=stats.started,
            errors=stats.errors,
            rps=stats.rps,
            p50_ms=percentile(stats.total_ms, 50),
            p99_ms=percentile(stats.total_ms, 99),
            ttfb_p50_ms=percentile(stats.ttfb_ms, 50),
            ttfb_p99_ms=percentile(stats.ttfb_ms, 99),
        )


@dataclass(frozen=True)
class CpuSnapshot:
    """CPU counters at one instant: the machine's busy and total CPU time, and the part that is ours
    (routerweb, the fake upstream, this process with the streaming client, and its finished wrk runs)."""

    machine_busy_s: float
    machine_total_s: float
    own_s: float


def cpu_snapshot(stack: BenchStack) -> CpuSnapshot:
    busy, total = machine_cpu_jiffies()
    tick = os.sysconf("SC_CLK_TCK")
    usage = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    own = stack.routerweb.cpu_seconds() + stack.upstream.cpu_seconds() + sum(u.ru_utime + u.ru_stime for u in usage)
    return CpuSnapshot(busy / tick, total / tick, own)


def machine_shares(before: CpuSnapshot, after: CpuSnapshot) -> tuple[float, float]:
    """(all CPUs busy %, busy with work that is not the benchmark's %) between two snapshots."""
    total = after.machine_total_s - before.machine_total_s
    if total <= 0:
        return 0.0, 0.0
    busy = after.machine_busy_s - before.machine_busy_s
    other = max(0.0, busy - (after.own_s - before.own_s))
    return 100.0 * busy / total, 100.0 * other / total


def wait_quiet(stack: BenchStack, timeout_s: float = QUIET_TIMEOUT_S) -> bool:
    """Wait until other processes use less than QUIET_PCT of the CPUs for 2 s in a row; False on timeout."""
    deadline, quiet_seconds = time.monotonic() + timeout_s, 0
    while time.monotonic() < deadline:
        before = cpu_snapshot(stack)
        time.sleep(1.0)
        quiet_seconds = quiet_seconds + 1 if machine_shares(before, cpu_snapshot(stack))[1] < QUIET_PCT else 0
        if quiet_seconds >= 2:
            return True
    print(f"    the machine did not get quiet within {timeout_s:g} s; measuring anyway", file=sys.stderr)
    return False


def run_all(runner: Runner, concurrencies: tuple[int, ...]) -> list[Measurement]:
    results = []
    for concurrency in concurrencies:
        for scenario in SCENARIOS:
            for target in TARGETS:
                m = runner.measure_undisturbed(scenario, target, concurrency)
                results.append(m)
                _progress(m)
    return results


def target_runs(runner: Runner, results: list[Measurement], runs: int) -> list[float]:
    """The added p50 of the target's scenario (50 ms upstream, concurrency 8) over `runs` runs: the
    one in `results`, then direct and routerweb again. It varies from run to run with how the load
    generator's connections fall into step (see "Reading the numbers"), so the target is judged on
    the median, and every run is shown."""
    scenario = next(s for s in SCENARIOS if s.name == "slow50")
    first = report.find(results, "slow50", "routerweb", 8)
    added = [] if first is None else [report.added_p50_ms(results, first)]
    while len(added) < runs:
        direct = runner.measure_undisturbed(scenario, "direct", 8)
        routed = runner.measure_undisturbed(scenario, "routerweb", 8)
        added.append(routed.p50_ms - direct.p50_ms)
        print(f"  target run {len(added)}/{runs}: added p50 {added[-1]:+.2f} ms", file=sys.stderr)
    return added


def billing_check(runner: Runner) -> BillingCheck:
    """Wait for the last batched inserts, then count every call row of the run."""
    time.sleep(FINAL_WAIT_S)
    totals = runner.totals
    return BillingCheck(
        rows=calls_count(runner.stack.database),
        sent=totals.sent,
        completed=totals.completed,
        forwarded=totals.forwarded,
    )


def _progress(m: Measurement) -> None:
    ttfb = f", TTFB p50 {m.ttfb_p50_ms:.2f} ms" if m.ttfb_p50_ms is not None else ""
    rows = f", sent {m.sent}, rows {m.rows}" if m.rows is not None else ""
    print(
        f"  {m.scenario.name:<8} c={m.concurrency:<3} {m.target:<9}: {m.rps:8.0f} req/s, p50 {m.p50_ms:.2f} ms,"
        f" p99 {m.p99_ms:.2f} ms{ttfb}, CPU {m.cpu_ms_per_request:.3f} ms/req,"
        f" machine {m.machine_busy_pct:.0f}% ({m.other_busy_pct:.0f}% other),"
        f" errors {m.errors}{rows}",
        file=sys.stderr,
    )


# ---------------------------------------------------------------------------- command line


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.gateway", description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", help="postgres://… (a fresh database of that name is created and dropped)")
    parser.add_argument("--redis-url", help="redis://… for the shared state (keys under a unique prefix)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per run (default 10)")
    parser.add_argument("--quick", action="store_true", help="3 s per run")
    parser.add_argument(
        "--concurrency", type=int, nargs="+", default=list(CONCURRENCIES), help="connections (default 8 32)"
    )
    parser.add_argument(
        "--retries", type=int, default=3, help="repeat a run disturbed by other processes up to N times (default 3)"
    )
    parser.add_argument(
        "--target-runs", type=int, default=5, help="runs of the target's scenario, judged on the median (default 5)"
    )
    parser.add_argument("--write-docs", action="store_true", help="update this set-up's section of docs/benchmarks.md")
    args = parser.parse_args(argv)
    if args.quick:
        args.duration = 3.0
    return args


def setup_key(args: argparse.Namespace) -> str:
    """The docs section of this set-up: the database engine (the cache is named inside the section)."""
    return "postgres" if args.database_url and args.database_url.startswith("postg") else "sqlite"


def command_line(argv: list[str]) -> str:
    python = Path(sys.executable)
    shown = str(python.relative_to(ROOT)) if python.is_relative_to(ROOT) else python.name
    args = [redact_url(a) if "://" in a else a for a in argv]
    return " ".join([shown, "-m", "bench.gateway", *map(shlex.quote, args)])


def run_info(args: argparse.Namespace, argv: list[str], stack: BenchStack) -> RunInfo:
    cache = f"Redis ({redact_url(args.redis_url)})" if args.redis_url else "local memory (one process)"
    return RunInfo(
        command=command_line(argv),
        date=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        machine=report.machine_description(),
        database=stack.database.label,
        cache=cache,
        duration_s=args.duration,
        retries=args.retries,
    )


def benchmark(args: argparse.Namespace, argv: list[str]) -> tuple[str, BillingCheck]:
    """Set up, warm up, measure everything, check the call rows; returns the Markdown section."""
    with BenchStack(database_url=args.database_url, redis_url=args.redis_url) as stack:
        print(
            f"routerweb {stack.routerweb.url} (pid {stack.routerweb.pid}), "
            f"fake upstream {stack.upstream.url} (pid {stack.upstream.pid}); warming up",
            file=sys.stderr,
        )
        runner = Runner(stack, args.duration, retries=args.retries)
        runner.warm_up()
        results = run_all(runner, tuple(args.concurrency))
        added = target_runs(runner, results, args.target_runs) if 8 in args.concurrency else []
        check = billing_check(runner)
        return report.section_markdown(run_info(args, argv, stack), results, check, added), check


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C, even if started with SIGINT ignored
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the clean-up on `kill` too
    try:
        section, check = benchmark(args, argv)
    except KeyboardInterrupt:
        print("interrupted; everything was shut down", file=sys.stderr)
        return 130
    except (BenchError, WrkError) as exc:
        print(f"bench failed: {exc}", file=sys.stderr)
        return 1
    print(section)
    if args.write_docs:
        report.docs_write(f"gateway:{setup_key(args)}", section)
        print(f"\nupdated {report.DOCS_PATH.relative_to(ROOT)} (section {setup_key(args)})", file=sys.stderr)
    return 0 if check.consistent else 2


if __name__ == "__main__":
    sys.exit(main())
