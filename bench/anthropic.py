"""/v1/chat/completions through an Anthropic candidate against an OpenAI-compatible one.

Usage: `.venv/bin/python -m bench.anthropic [--database-url URL] [--redis-url URL] [--duration 5]
[--rounds 3] [--concurrency 8] [--quiet-timeout 120] [--translation-only]`. Prints two Markdown
tables (docs/benchmarks.md has the latest): the CPU each adapter's translation costs per request,
measured in-process, then the load runs'.

Both candidates are the same fake upstream (bench.harness.BenchStack): provider `fake` answers
`POST /chat/completions` and provider `fake-anthropic` (`api_format: anthropic`) `POST /messages`,
the same words in each format. Per format and mode (bench.sse_client's load generator, for JSON
answers too) the load goes once straight to the fake upstream in that format and once through
routerweb, so "added" is what routerweb costs on top of the upstream, translation included. CPU is
routerweb's (with its row writer) per completed request, read from /proc after a settle pause. The
cases run in `--rounds` rounds, each in a rotated order (a run pays for the rows still being stored
from the one before it), and the table shows each figure's median over the rounds.
"""

from __future__ import annotations

import argparse
import json
import signal
import statistics
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


def median_run(runs: list[Run]) -> Run:
    """Each figure's median over `runs` (errors: their sum)."""
    return Run(
        requests=sum(r.requests for r in runs),
        errors=sum(r.errors for r in runs),
        p50_ms=statistics.median(r.p50_ms for r in runs),
        p99_ms=statistics.median(r.p99_ms for r in runs),
        cpu_ms_per_request=statistics.median(r.cpu_ms_per_request for r in runs),
    )


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
        time.sleep(SETTLE_S)
        runs: list[tuple[list[Run], list[Run]]] = [([], []) for _ in CASES]  # per case: direct, routed
        order = list(range(len(CASES)))
        for round_number in range(args.rounds):
            for index in order[round_number:] + order[:round_number]:
                case = CASES[index]
                for routed, samples in zip((False, True), runs[index], strict=True):
                    wait_quiet(stack, args.quiet_timeout)
                    samples.append(
                        measure(stack, case, routed=routed, concurrency=args.concurrency, duration_s=args.duration)
                    )
                direct, routed = runs[index][0][-1], runs[index][1][-1]
                mode = "stream" if case.stream else "json"
                print(
                    f"  round {round_number + 1} {case.name:<9} {mode:<6} direct p50 {direct.p50_ms:.2f} ms, "
                    f"routed p50 {routed.p50_ms:.2f} ms, CPU {routed.cpu_ms_per_request:.3f} ms/req",
                    file=sys.stderr,
                )
        rows = [
            (case, median_run(direct), median_run(routed)) for case, (direct, routed) in zip(CASES, runs, strict=True)
        ]
        return table(rows, args.concurrency)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.anthropic", description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", help="postgres://… (a fresh database of that name is created and dropped)")
    parser.add_argument("--redis-url", help="redis://… for the shared state (keys under a unique prefix)")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per run (default 5)")
    parser.add_argument(
        "--translation-only", action="store_true", help="only the in-process CPU of each adapter's translation"
    )
    parser.add_argument("--rounds", type=int, default=3, help="rounds of every case, medians shown (default 3)")
    parser.add_argument("--concurrency", type=int, default=8, help="connections (default 8)")
    parser.add_argument(
        "--quiet-timeout", type=float, default=120.0, help="wait at most S s for a quiet machine before a run"
    )
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the clean-up on `kill` too
    cpu = translation_cpu_us()
    print("| adapter, mode | translation CPU µs/request (in-process) |\n|---|---:|")
    print("\n".join(f"| {name} | {us:.1f} |" for name, us in cpu.items()))
    if args.translation_only:
        return 0
    print()
    try:
        print(benchmark(args))
    except BenchError as exc:
        print(f"bench failed: {exc}", file=sys.stderr)
        return 1
    return 0


# ---------------------------------------------------------------------------- in-process: translation CPU


def translation_cpu_us(iterations: int = 5000) -> dict[str, float]:
    """µs of CPU per request that each adapter spends on its format, measured in-process (steadier
    than a load run on a busy machine): building the upstream body and reading the answer, and for
    a stream relaying the fake upstream's 16-word stream in that format."""
    import asyncio
    import os

    import django
    import httpx

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "routerweb.settings")
    os.environ.setdefault("SECRET_KEY", "bench-in-process-only")  # no database, no session: never used
    django.setup()
    from routing.providers.registry import adapter_for
    from routing.snapshot import ModelSnap, ProviderSnap
    from testkit.fake_upstream import FakeUpstream

    provider = ProviderSnap(1, "p", "http://127.0.0.1:1", "", 5.0, 30.0, True)
    model = ModelSnap(1, "m", "echo", provider, True, None)
    request = {"model": "m", "messages": MESSAGES, "max_tokens": 64}
    results = {}
    for api_format, path, upstream_body in (
        (
            "openai",
            "/chat/completions",
            {**request, "model": "echo+words=16", "stream_options": {"include_usage": True}},
        ),
        ("anthropic", "/messages", CASES[3].direct_body),
    ):
        adapter = adapter_for(api_format)
        answer = asyncio.run(_fake_answer(FakeUpstream(), path, {**upstream_body, "stream": False}))
        events = asyncio.run(_fake_answer(FakeUpstream(), path, {**upstream_body, "stream": True}))
        start = time.process_time()
        for _ in range(iterations):
            adapter.request_body(request, model)
            adapter.answer(answer)
        results[f"{api_format} non-stream"] = (time.process_time() - start) * 1e6 / iterations
        start = time.process_time()
        for _ in range(iterations):
            adapter.request_body({**request, "stream": True}, model)
            relay = adapter.stream_relay(httpx.Response(200), provider, client_wants_usage=True)
            for payload in relay._parser.feed(events):
                relay.relay_event(payload)
        assert relay.finished and relay.usage.completion == 16 and relay.text_chars > 0, relay.usage
        results[f"{api_format} stream"] = (time.process_time() - start) * 1e6 / iterations
    return results


async def _fake_answer(app, path: str, body: dict) -> bytes:
    """The fake upstream's whole response body for `body`, called in-process."""
    sent, chunks = [json.dumps(body).encode()], []

    async def receive():
        return {"type": "http.request", "body": sent.pop(), "more_body": False} if sent else {"type": "http.disconnect"}

    async def send(message):
        if message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    headers = [(b"x-api-key", b"k"), (b"anthropic-version", b"2023-06-01")]
    await app({"type": "http", "method": "POST", "path": path, "headers": headers}, receive, send)
    return b"".join(chunks)


if __name__ == "__main__":
    sys.exit(main())
