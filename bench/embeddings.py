"""What /v1/embeddings adds per request, next to /v1/chat/completions: wrk against the fake upstream
directly and through routerweb (one worker), scenarios interleaved round by round so that drift on the
machine hits them alike.

Scenarios (the upstream answers at once; routerweb writes a cost row for each call):
- `chat`: the benchmark's chat request to model `fast` (as bench.gateway's `fast` scenario);
- `embed 1`: one short string, 1,536 dimensions as floats (about 14 KB of JSON back);
- `embed 64 b64`: 64 strings, 1,536 dimensions, base64 (about 520 KB back): the answer is relayed
  without parsing its vectors, so its size should cost routerweb little more than copying it.

Per scenario: requests per second, latency percentiles, and routerweb's CPU per request (its process
tree, the row writer included); the added latency is the median p50 through routerweb minus directly.

    .venv/bin/python -m bench.embeddings [--database-url …] [--redis-url …] [--duration 5] [--rounds 3]
"""

import argparse
import json
import statistics
import time
from pathlib import Path

from .harness import BenchStack, manage
from .wrk import wrk_run

EMBED_MODEL = "embed-fast"
CHAT_BODY = {
    "model": "fast",
    "messages": [{"role": "user", "content": "Say hello to the benchmark in a few words, please."}],
    "max_tokens": 64,
}
SCENARIOS = {
    "chat": ("/chat/completions", CHAT_BODY),
    "embed 1": ("/embeddings", {"model": EMBED_MODEL, "input": "hello embeddings benchmark", "dimensions": 1536}),
    "embed 64 b64": (
        "/embeddings",
        {
            "model": EMBED_MODEL,
            "input": [f"benchmark text number {i}" for i in range(64)],
            "dimensions": 1536,
            "encoding_format": "base64",
        },
    ),
}


def embeddings_model_add(stack: BenchStack) -> None:
    """An embeddings model on the fake upstream, priced like the chat models (input only)."""
    registry = {
        "models": [
            {
                "name": EMBED_MODEL,
                "provider": "fake",
                "kind": "embeddings",
                "upstream_model": "echo",
                "price": {"input_per_mtok": 1, "output_per_mtok": 0},
            }
        ]
    }
    path = stack.tmp / "embeddings.yaml"
    path.write_text(json.dumps(registry), encoding="utf-8")
    manage(stack.env, "import_registry", str(path))
    time.sleep(2.5)  # the registry change is in force within a second on every worker


def run(url: str, body_file: Path, *, api_key: str, cpu, connections: int, duration_s: float) -> dict:
    cpu_before = cpu()
    result = wrk_run(url, body_file, api_key=api_key, connections=connections, duration_s=duration_s)
    time.sleep(1.5)  # the call rows are stored by then, and counted in the CPU
    return {
        "rps": result.rps,
        "p50": result.p50_ms,
        "p99": result.p99_ms,
        "cpu_ms": (cpu() - cpu_before) * 1000 / max(1, result.requests),
        "errors": result.errors,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url")
    parser.add_argument("--redis-url")
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args(argv)
    results: dict[tuple[str, str], list[dict]] = {}
    with BenchStack(database_url=args.database_url, redis_url=args.redis_url) as stack:
        embeddings_model_add(stack)
        files = {}
        for name, (_, body) in SCENARIOS.items():
            files[name] = stack.tmp / f"{name.replace(' ', '-')}.json"
            files[name].write_text(json.dumps(body), encoding="utf-8")
        targets = {
            "direct": (stack.upstream.url, "", stack.upstream.cpu_seconds),
            "routerweb": (stack.routerweb.url + "/v1", stack.api_key, stack.routerweb.cpu_seconds),
        }
        options = {"connections": args.concurrency, "duration_s": args.duration}
        for name, (path, _) in SCENARIOS.items():  # warm-up, and a check that every scenario answers
            base, key, cpu = targets["routerweb"]
            warm = run(base + path, files[name], api_key=key, cpu=cpu, connections=2, duration_s=1)
            if warm["errors"]:
                raise SystemExit(f"{name}: {warm['errors']} errors through routerweb in the warm-up")
        for _ in range(args.rounds):
            for name, (path, _) in SCENARIOS.items():
                for target, (base, key, cpu) in targets.items():
                    result = run(base + path, files[name], api_key=key, cpu=cpu, **options)
                    results.setdefault((name, target), []).append(result)
    setup = "PostgreSQL + Redis" if args.redis_url else "SQLite + local memory"
    print(f"\n{setup}, concurrency {args.concurrency}, {args.rounds} rounds of {args.duration:g} s (medians)\n")
    print("| scenario | target | req/s | p50 ms | p99 ms | server CPU ms/req | errors |")
    print("|---|---|---|---|---|---|---|")
    medians = {}
    for (name, target), runs in results.items():
        med = medians[name, target] = {key: statistics.median(r[key] for r in runs) for key in runs[0]}
        errors = sum(r["errors"] for r in runs)
        print(
            f"| {name} | {target} | {med['rps']:.0f} | {med['p50']:.2f} | {med['p99']:.2f} | "
            f"{med['cpu_ms']:.3f} | {errors} |"
        )
    print()
    for name in SCENARIOS:
        direct, routed = medians[name, "direct"], medians[name, "routerweb"]
        print(
            f"- {name}: routerweb adds {routed['p50'] - direct['p50']:.2f} ms at p50 and uses "
            f"{routed['cpu_ms']:.3f} ms of CPU per request"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
