"""What the metrics and the call log line cost the gateway at saturation.

Usage: `.venv/bin/python -m bench.metrics_cost [--database-url URL] [--redis-url URL] [--duration 3]
[--rounds 20]`; prints a Markdown section for docs/benchmarks.md.

Two measurements:
- In isolation: the time of one call's `GatewayMetrics.call_observed` (multiprocess mode, a temporary
  directory, as in production with several workers) and of its log line (to /dev/null), for a
  non-streamed call with one fallback, against routerweb's CPU per request at saturation.
- Under load, as bench.costs does (one fresh stack per mode, side by side, the modes taking turns in
  rotating order, each round's drop against the same round's reference): `reference` (metrics and call
  log off, bench.server_variant), `metrics`, and `metrics + call log` (the production defaults), wrk at
  concurrency 8 on an upstream that answers at once (routerweb's CPU is the limit).
Target (issue 18): metrics cost under 3% of the requests per second at saturation.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from statistics import median, quantiles

from . import report
from .costs import mode_database_url
from .gateway import SCENARIOS, WARMUP_S, Runner, wait_quiet
from .harness import BenchStack, redact_url, routerweb_command, routerweb_command_through

TARGET_DROP_PCT = 3.0
CONCURRENCY = 8
QUIET_WAIT_S = 15.0  # at most, before each run: on a machine others use, a quiet moment may not come


@dataclass(frozen=True)
class Mode:
    key: str
    label: str
    wrapper: tuple[str, ...] = ()


MODES = (
    Mode("reference", "metrics and call log off", ("bench.server_variant", "--no-metrics", "--no-call-log")),
    Mode("metrics", "metrics on, call log off", ("bench.server_variant", "--no-call-log")),
    Mode("all", "metrics and call log on (defaults)"),
)


def micro_us(repeat: int = 20000) -> tuple[float, float]:
    """(µs per call_observed, µs per call log line), median of 5 timings of `repeat` calls."""
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="routerweb-metrics-bench-")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "routerweb.settings")
    os.environ.setdefault("SECRET_KEY", "bench-metrics-in-isolation")
    import django

    django.setup()
    from datetime import datetime as dt

    from routing.call_log import call_logged, logger
    from routing.metering import CallOutcome
    from routing.metrics import GatewayMetrics
    from routing.snapshot import ModelSnap, ProviderSnap
    from routing.usage import Usage

    provider = ProviderSnap(1, "p", "http://x", "", 1.0, 1.0, True)
    model = ModelSnap(1, "fast", "echo", provider, True, None)
    outcome = CallOutcome(
        request_id="req_x",
        created_at=dt.now(UTC),
        source="api",
        user_id=1,
        api_key_id=1,
        requested="fast",
        model=model,
        status="ok",
        http_status=200,
        usage=Usage(20, 0, 8),
        latency_ms=3,
        overhead_ms=0.4,
        attempts=[
            {"model": "other", "outcome": "error", "status": 503, "latency_ms": 1, "reason": "HTTP 503"},
            {"model": "fast", "outcome": "ok", "status": 200, "latency_ms": 1, "reason": "ok"},
        ],
        cost_usd=0.000013,
    )
    metrics = GatewayMetrics()
    handler = logging.FileHandler(os.devnull)
    logger.handlers, logger.propagate, logger.level = [handler], False, logging.INFO

    def timed(step) -> float:
        runs = []
        for _ in range(5):
            started = time.perf_counter()
            for _ in range(repeat):
                step()
            runs.append((time.perf_counter() - started) / repeat * 1e6)
        return median(runs)

    observe = timed(lambda: metrics.call_observed(outcome))
    log = timed(lambda: call_logged(outcome, key_prefix="rw-abc", tries=2, with_content=False))
    return observe, log


def measure_rounds(args: argparse.Namespace) -> dict[Mode, list[tuple[float, float]]]:
    """Per mode, (req/s, server CPU ms per request) of every round."""
    scenario = next(s for s in SCENARIOS if s.name == "fast")
    results: dict[Mode, list[tuple[float, float]]] = {mode: [] for mode in MODES}
    with contextlib.ExitStack() as stacks:
        runners = {}
        for mode in MODES:
            command = routerweb_command_through(*mode.wrapper) if mode.wrapper else routerweb_command
            stack = stacks.enter_context(
                BenchStack(
                    database_url=mode_database_url(args.database_url, mode),
                    redis_url=args.redis_url,
                    routerweb_argv=command,
                )
            )
            runners[mode] = Runner(stack, args.duration)
        for number in range(args.rounds):
            for mode in MODES[number % len(MODES) :] + MODES[: number % len(MODES)]:
                runner = runners[mode]
                wait_quiet(runner.stack, timeout_s=QUIET_WAIT_S)
                runner.measure(scenario, "routerweb", CONCURRENCY, WARMUP_S)
                m = runner.measure(scenario, "routerweb", CONCURRENCY, args.duration)
                results[mode].append((m.rps, m.cpu_ms_per_request))
                print(f"round {number + 1}, {mode.label}: {m.rps:.0f} req/s", file=sys.stderr)
    return results


def section(args, argv, micro: tuple[float, float], results) -> str:
    observe_us, log_us = micro
    reference = results[MODES[0]]
    cpu_ref = median(cpu for _, cpu in reference)
    lines = [
        "### Metrics and call log overhead",
        "",
        f"- Command: `.venv/bin/python -m bench.metrics_cost {' '.join(argv)}`",
        f"- Date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; {report.machine_description()}",
        f"- Database: {redact_url(args.database_url) if args.database_url else 'SQLite (fresh file)'}"
        f"; shared state: {redact_url(args.redis_url) if args.redis_url else 'local memory'}",
        f"- In isolation (multiprocess mode): one call's metrics {observe_us:.1f} µs, its log line"
        f" {log_us:.1f} µs, against {cpu_ref * 1000:.0f} µs of server CPU per request at saturation"
        f" (reference mode): **{observe_us / (cpu_ref * 10):.1f}%** and {log_us / (cpu_ref * 10):.1f}%.",
        f"- Under load: wrk c{CONCURRENCY}, upstream answers at once, {args.rounds} rounds of {args.duration:g} s"
        " per mode, modes rotating; the drop is the median of each round's drop against the same round's"
        " reference.",
        "",
        "| mode | req/s (median) | vs reference | middle half of the rounds | server CPU ms/req |",
        "|---|---:|---:|---|---:|",
    ]
    for mode in MODES:
        runs = results[mode]
        rps = median(r for r, _ in runs)
        cpu = median(c for _, c in runs)
        if mode is MODES[0]:
            lines.append(f"| {mode.label} | {rps:.0f} | reference | – | {cpu:.3f} |")
            continue
        drops = [(1 - r / ref) * 100 for (r, _), (ref, _) in zip(runs, reference, strict=True)]
        low, _, high = quantiles(drops, n=4) if len(drops) > 1 else (drops[0], 0, drops[0])
        lines.append(f"| {mode.label} | {rps:.0f} | {-median(drops):+.1f}% | {low:.1f}% … {high:.1f}% | {cpu:.3f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url")
    parser.add_argument("--redis-url")
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--micro-only", action="store_true", help="only the measurement in isolation")
    args = parser.parse_args(argv)
    micro = micro_us()
    print(f"in isolation: metrics {micro[0]:.1f} µs, log line {micro[1]:.1f} µs per call", file=sys.stderr)
    if args.micro_only:
        return 0
    print(section(args, argv, micro, measure_rounds(args)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
