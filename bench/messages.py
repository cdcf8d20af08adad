"""What /v1/messages costs next to /v1/chat/completions, through each kind of candidate.

Usage: `.venv/bin/python -m bench.messages [--database-url URL] [--redis-url URL] [--duration 5]
[--concurrency 8] [--streams 200] [--rounds 3] [--micro-only]`

One routerweb worker (the production command) in a throwaway environment (bench.harness.BenchStack,
whose registry has both kinds of provider on the same fake upstream), which answers at once:
routerweb's CPU is the limit, so what a translation adds shows. Rows, non-streaming
(`--concurrency` keep-alive connections of an httpx client, `--duration` s each):

- `chat → openai`: /v1/chat/completions on an OpenAI-compatible candidate (the reference);
- `messages → openai`: /v1/messages on the same candidate (translated both ways);
- `messages → anthropic`: /v1/messages on a candidate of kind Anthropic (the fake's Anthropic mode,
  passed through natively);
- `chat → anthropic`: /v1/chat/completions on that candidate (the adapter's translation), for scale.

Then the same four streaming (16 chunks), `--streams` streams one after another on one connection,
for the total time of a stream and the CPU per stream. The server's CPU time (with its row writer)
is read from /proc around each run; its difference to the reference row is the added CPU per request.
First, in process, the translation's own CPU per call (`translation_micro`), which a busy machine
does not blur as it does a whole request's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
import timeit
from dataclasses import dataclass

import httpx

from .gateway import SETTLE_S, WARMUP_S, wait_quiet
from .harness import BenchStack
from .sse_client import percentile

SYSTEM = "You are a helpful assistant."
QUIET_WAIT_S = 5.0  # the machine may be shared: wait this long at most for it to get quiet
USER = "Say hello to the benchmark in a few words, please."


@dataclass(frozen=True)
class Row:
    label: str
    path: str
    model: str
    stream_model: str


ROWS = (
    Row("chat → openai", "/v1/chat/completions", "fast", "stream16"),
    Row("messages → openai", "/v1/messages", "fast", "stream16"),
    Row("messages → anthropic", "/v1/messages", "claude-fast", "claude-stream"),
    Row("chat → anthropic", "/v1/chat/completions", "claude-fast", "claude-stream"),
)


def request_body(row: Row, *, stream: bool) -> bytes:
    model = row.stream_model if stream else row.model
    if row.path == "/v1/messages":
        body = {"model": model, "max_tokens": 64, "system": SYSTEM, "messages": [{"role": "user", "content": USER}]}
    else:
        messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": USER}]
        body = {"model": model, "max_tokens": 64, "messages": messages}
    if stream:
        body["stream"] = True
    return json.dumps(body).encode()


def non_streaming(stack: BenchStack, row: Row, *, concurrency: int, duration_s: float) -> dict:
    url, body = stack.routerweb.url + row.path, request_body(row, stream=False)
    asyncio.run(_load(url, body, stack.api_key, concurrency=concurrency, duration_s=WARMUP_S))
    wait_quiet(stack, timeout_s=QUIET_WAIT_S)
    cpu_before = stack.routerweb.cpu_seconds()
    latencies, errors, elapsed = asyncio.run(
        _load(url, body, stack.api_key, concurrency=concurrency, duration_s=duration_s)
    )
    time.sleep(SETTLE_S)
    cpu_ms = (stack.routerweb.cpu_seconds() - cpu_before) * 1000 / max(1, len(latencies))
    return {
        "rps": len(latencies) / elapsed,
        "p50_ms": percentile(latencies, 50),
        "p99_ms": percentile(latencies, 99),
        "cpu_ms": cpu_ms,
        "errors": errors,
    }


async def _load(url: str, body: bytes, api_key: str, *, concurrency: int, duration_s: float):
    """`concurrency` keep-alive connections posting `body` in a loop for `duration_s` (httpx: wrk, which
    the other benchmarks use, may be missing; the client's CPU is not the server's)."""
    headers = {"Authorization": f"Bearer {api_key}", "content-type": "application/json"}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    latencies: list[float] = []
    errors = 0
    started = time.perf_counter()
    deadline = started + duration_s

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal errors
        while time.perf_counter() < deadline:
            sent = time.perf_counter()
            response = await client.post(url, content=body)
            if response.status_code == 200:
                latencies.append((time.perf_counter() - sent) * 1000)
            else:
                errors += 1

    async with httpx.AsyncClient(headers=headers, limits=limits, timeout=30) as client:
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
    return latencies, errors, time.perf_counter() - started


def streaming(stack: BenchStack, row: Row, *, streams: int) -> dict:
    body = request_body(row, stream=True)
    headers = {**stack.auth_headers, "content-type": "application/json"}
    with httpx.Client(base_url=stack.routerweb.url, headers=headers, timeout=30) as client:
        for _ in range(10):  # warm-up
            client.post(row.path, content=body).read()
        wait_quiet(stack, timeout_s=QUIET_WAIT_S)
        cpu_before, totals, errors = stack.routerweb.cpu_seconds(), [], 0
        for _ in range(streams):
            started = time.perf_counter()
            with client.stream("POST", row.path, content=body) as response:
                tail = b"".join(response.iter_bytes())[-200:]
            totals.append((time.perf_counter() - started) * 1000)
            errors += response.status_code != 200 or not (b"[DONE]" in tail or b"message_stop" in tail)
        time.sleep(SETTLE_S)
        cpu_ms = (stack.routerweb.cpu_seconds() - cpu_before) * 1000 / streams
    return {"p50_ms": statistics.median(totals), "cpu_ms": cpu_ms, "errors": errors}


def _rounds(rounds: int, measure) -> dict[Row, dict]:
    """Each row measured `rounds` times, the rows taking turns; per row the median of each figure."""
    samples: dict[Row, list[dict]] = {row: [] for row in ROWS}
    for _ in range(rounds):
        for row in ROWS:
            samples[row].append(measure(row))
    return {row: {name: statistics.median(s[name] for s in runs) for name in runs[0]} for row, runs in samples.items()}


def translation_micro() -> dict[str, float]:
    """The translation's own CPU, in process (µs per call, best of 5; steady even on a busy machine):
    what /v1/messages adds on top of the chat path's work for an OpenAI-compatible candidate."""
    import orjson

    from routing.messages_format import message_from_completion
    from routing.messages_schema import messages_request_parse
    from routing.messages_stream import ChunkTranslator
    from routing.schemas import chat_request_parse
    from routing.usage import Usage

    messages_raw = request_body(ROWS[1], stream=False)
    chat_raw = request_body(ROWS[0], stream=False)
    completion = {
        "id": "chatcmpl-1",
        "model": "echo",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": USER}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 20, "completion_tokens": 16},
    }
    completion_raw = orjson.dumps(completion)
    usage = Usage(20, 0, 16)
    head = {"id": "c", "object": "chat.completion.chunk", "model": "echo"}
    chunks = [
        orjson.dumps({**head, "choices": [{"index": 0, "delta": {"content": f" word{i}"}, "finish_reason": None}]})
        for i in range(16)
    ]
    chunks += [orjson.dumps({**head, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}), b"[DONE]"]

    def answer() -> bytes:
        parsed = orjson.loads(completion_raw)
        return orjson.dumps(message_from_completion(parsed, message_id="msg_1", model="echo", usage=usage))

    def stream() -> None:
        translator = ChunkTranslator(message_id="msg_1", model="echo")
        for payload in chunks:
            translator.events(payload, usage)

    def best_us(fn, number: int = 2000) -> float:
        return min(timeit.repeat(fn, number=number, repeat=5)) / number * 1e6

    return {
        "chat request check (reference)": best_us(lambda: chat_request_parse(chat_raw)),
        "messages request check + translation": best_us(lambda: messages_request_parse(messages_raw)),
        "answer → message": best_us(answer),
        "16-chunk stream → events": best_us(stream),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url")
    parser.add_argument("--redis-url")
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--streams", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--micro-only", action="store_true", help="only the in-process translation timings")
    args = parser.parse_args(argv)
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "routerweb.settings")
    os.environ.setdefault("SECRET_KEY", "bench")
    django.setup()
    print("translation's own CPU, in process, µs per call (best of 5)")
    for label, micros in translation_micro().items():
        print(f"  {label:40} {micros:8.1f}")
    if args.micro_only:
        return 0
    with BenchStack(database_url=args.database_url, redis_url=args.redis_url) as stack:
        print(
            f"non-streaming, upstream answers at once, concurrency {args.concurrency}, {args.duration:g} s each,"
            f" median of {args.rounds} rounds (rows take turns)"
        )
        results = _rounds(
            args.rounds, lambda row: non_streaming(stack, row, concurrency=args.concurrency, duration_s=args.duration)
        )
        print(f"{'row':24} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'CPU ms/req':>11} {'added CPU':>10} errors")
        reference = results[ROWS[0]]["cpu_ms"]
        for row in ROWS:
            r = results[row]
            print(
                f"{row.label:24} {r['rps']:8.0f} {r['p50_ms']:8.2f} {r['p99_ms']:8.2f} {r['cpu_ms']:11.3f}"
                f" {r['cpu_ms'] - reference:+10.3f} {r['errors']:.0f}"
            )
        print(f"\nstreaming, 16 chunks, {args.streams} streams one after another, median of {args.rounds} rounds")
        results = _rounds(args.rounds, lambda row: streaming(stack, row, streams=args.streams))
        print(f"{'row':24} {'p50 ms':>8} {'CPU ms/stream':>14} {'added CPU':>10} errors")
        reference = results[ROWS[0]]["cpu_ms"]
        for row in ROWS:
            r = results[row]
            print(
                f"{row.label:24} {r['p50_ms']:8.2f} {r['cpu_ms']:14.3f}"
                f" {r['cpu_ms'] - reference:+10.3f} {r['errors']:.0f}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
