"""/v1/chat/completions through an Anthropic candidate against an OpenAI-compatible one.

Usage: `.venv/bin/python -m bench.anthropic [--database-url URL] [--redis-url URL] [--duration 5]
[--concurrency 8] [--quiet-timeout 120]`. Prints a Markdown table (docs/benchmarks.md has the latest one).

Both candidates are the same fake upstream (bench.harness.BenchStack): provider `fake` answers
`POST /chat/completions` and provider `fake-anthropic` (`api_format: anthropic`) `POST /messages`,
the same words in each format. Per format and mode (bench.sse_client's load generator, for JSON
answers too) the load goes once straight to the fake upstream in that format and once through
routerweb, so "added" is what routerweb costs on top of the upstream, translation included. CPU is
routerweb's (with its row writer) per completed request, read from /proc after a settle pause.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from dataclasses import dataclass

from .gateway import SETTLE_S, WARMUP_S, wait_quiet
from .harness import HOST, BenchError, BenchStack, Server
from .sse_client import StreamTarget, percentile, stream_load

MESSAGES = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "Say hello to the benchmark in a few words, please."},
]
ANTHROPIC_VERSION_HEADER = "anthropic-version: 2023-06-01"


@dataclass(frozen=True)
class Case:
    """One format and mode: the model routerweb routes to, and the fake's own request for it."""

    name: str
    stream: bool
    routed_model: str  # a model of the bench registry (bench.harness)
    direct_path: str  # the fake upstream's endpoint in that format
    direct_body: dict
    direct_header: str = ""
    direct_done: bytes = b"data: [DONE]"


CASES = (
    Case("openai", False, "fast", "/chat/completions", {"model": "echo", "messages": MESSAGES, "max_tokens": 64}),
    Case(
        "anthropic",
        False,
        "claude-fast",
        "/messages",
        {"model": "claude", "system": MESSAGES[0]["content"], "messages": MESSAGES[1:], "max_tokens": 64},
        ANTHROPIC_VERSION_HEADER,
    ),
    Case(
        "openai",
        True,
        "stream16",
        "/chat/completions",
        {"model": "echo+words=16", "messages": MESSAGES, "max_tokens": 64, "stream": True},
    ),
    Case(
        "anthropic",
        True,
        "claude-stream",
        "/messages",
        {
            "model": "claude+words=16",
            "system": MESSAGES[0]["content"],
            "messages": MESSAGES[1:],
            "max_tokens": 64,
            "stream": True,
        },
        ANTHROPIC_VERSION_HEADER,
        b'"message_stop"',
    ),
)


@dataclass(frozen=True)
class Run:
    requests: int
    errors: int
    p50_ms: float
    p99_ms: float
    cpu_ms_per_request: float


def measure(stack: BenchStack, case: Case, *, routed: bool, concurrency: int, duration_s: float) -> Run:
    """One load run against the fake upstream (`routed` False) or routerweb, with the server's CPU per request."""
    server: Server = stack.routerweb if routed else stack.upstream
    if routed:
        path, header, done = "/v1/chat/completions", "", None
        body = {"model": case.routed_model, "messages": MESSAGES, "max_tokens": 64, "stream": case.stream}
    else:
        path, body, header, done = case.direct_path, case.direct_body, case.direct_header, case.direct_done
    target = StreamTarget(
        HOST,
        server.port,
        path,
        json.dumps(body).encode(),
        stack.api_key if routed else "bench-anthropic-key",
        headers=(header,) if header else (),
        done_mark=(done or b"data: [DONE]") if case.stream else b"",
    )
    cpu_before = server.cpu_seconds()
    stats = stream_load(target, concurrency=concurrency, duration_s=duration_s)
    time.sleep(SETTLE_S)
    cpu_ms = (server.cpu_seconds() - cpu_before) * 1000 / max(1, stats.completed)
    if stats.errors:
        print(f"    {stats.errors} errors, first: {stats.first_error}", file=sys.stderr)
    return Run(stats.completed, stats.errors, percentile(stats.total_ms, 50), percentile(stats.total_ms, 99), cpu_ms)


def table(rows: list[tuple[Case, Run, Run]], concurrency: int) -> str:
    lines = [
        f"Concurrency {concurrency}; direct = the fake upstream in that format, routed = /v1/chat/completions.",
        "",
        "| candidate | mode | direct p50 ms | routed p50 ms | added p50 ms | added p99 ms | routerweb CPU ms/req "
        "| errors |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for case, direct, routed in rows:
        lines.append(
            f"| {case.name} | {'stream' if case.stream else 'non-stream'} | {direct.p50_ms:.2f} | {routed.p50_ms:.2f} "
            f"| {routed.p50_ms - direct.p50_ms:+.2f} | {routed.p99_ms - direct.p99_ms:+.2f} "
            f"| {routed.cpu_ms_per_request:.3f} | {direct.errors + routed.errors} |"
        )
    return "\n".join(lines)


def benchmark(args: argparse.Namespace) -> str:
    with BenchStack(database_url=args.database_url, redis_url=args.redis_url) as stack:
        for case in CASES:  # open the pools, load the registry
            measure(stack, case, routed=True, concurrency=args.concurrency, duration_s=WARMUP_S)
        rows = []
        for case in CASES:
            wait_quiet(stack, args.quiet_timeout)
            direct = measure(stack, case, routed=False, concurrency=args.concurrency, duration_s=args.duration)
            wait_quiet(stack, args.quiet_timeout)
            routed = measure(stack, case, routed=True, concurrency=args.concurrency, duration_s=args.duration)
            mode = "stream" if case.stream else "json"
            print(
                f"  {case.name:<9} {mode:<6} direct p50 {direct.p50_ms:.2f} ms, routed p50 {routed.p50_ms:.2f} ms, "
                f"CPU {routed.cpu_ms_per_request:.3f} ms/req",
                file=sys.stderr,
            )
            rows.append((case, direct, routed))
        return table(rows, args.concurrency)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.anthropic", description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", help="postgres://… (a fresh database of that name is created and dropped)")
    parser.add_argument("--redis-url", help="redis://… for the shared state (keys under a unique prefix)")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per run (default 5)")
    parser.add_argument("--concurrency", type=int, default=8, help="connections (default 8)")
    parser.add_argument(
        "--quiet-timeout", type=float, default=120.0, help="wait at most S s for a quiet machine before a run"
    )
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the clean-up on `kill` too
    try:
        print(benchmark(args))
    except BenchError as exc:
        print(f"bench failed: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
