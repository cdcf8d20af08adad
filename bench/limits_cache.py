"""What rate limits and the response cache cost: wrk at saturation against routerweb (one worker) in front
of the fake upstream's instant model `fast`.

Scenarios, interleaved round by round so that drift on the machine hits them alike:
- `no limits`: the bench key has no limit (the dict lookup only);
- `limits`: the key has limits it never reaches (requests and tokens per minute: two counters hit and
  read per request, in the worker's memory or on Redis with `--redis-url`);
- `cache miss`: the same request as `no limits` (answered by the upstream, cost row written);
- `cache hit`: the request asks for the cache (`"cache": {"ttl": 3600}`), identical each time: every
  request but the first is a hit (cache_hit row written).

    .venv/bin/python -m bench.limits_cache [--redis-url redis://127.0.0.1:6379/3] [--database-url …]
"""

import argparse
import json
import statistics
import time

from .harness import BenchStack, manage
from .wrk import wrk_run

MESSAGES = [{"role": "user", "content": "hello from the limits and cache benchmark"}]
LIMITS_SET = "from routing.models import ApiKey; ApiKey.objects.update(rpm_limit={rpm}, tpm_limit={tpm})"
SETTLE_S = 2.5  # the registry change is in force within a second on every worker


def limits_set(stack: BenchStack, *, on: bool) -> None:
    """Give the bench key limits it never reaches (on), or none; update() is followed by a version bump."""
    code = LIMITS_SET.format(rpm=10**9 if on else None, tpm=2 * 10**9 if on else None)
    code += "; from routing.registry_version import registry_version_bump; registry_version_bump()"
    manage(stack.env, "shell", "--no-imports", "-c", code)
    time.sleep(SETTLE_S)


def run(stack: BenchStack, body_file, *, connections: int, duration_s: float) -> dict:
    cpu_before = stack.routerweb.cpu_seconds()
    result = wrk_run(
        stack.routerweb.url + "/v1/chat/completions",
        body_file,
        api_key=stack.api_key,
        connections=connections,
        duration_s=duration_s,
    )
    time.sleep(1.5)
    cpu = stack.routerweb.cpu_seconds() - cpu_before
    return {
        "rps": result.rps,
        "p50": result.p50_ms,
        "p99": result.p99_ms,
        "cpu_ms": cpu * 1000 / max(1, result.requests),
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
    results: dict[str, list[dict]] = {}
    with BenchStack(database_url=args.database_url, redis_url=args.redis_url) as stack:
        plain = stack.tmp / "plain.json"
        plain.write_text(json.dumps({"model": "fast", "messages": MESSAGES}))
        cached = stack.tmp / "cached.json"
        cached.write_text(json.dumps({"model": "fast", "messages": MESSAGES, "cache": {"ttl": 3600}}))
        options = {"connections": args.concurrency, "duration_s": args.duration}
        run(stack, plain, connections=args.concurrency, duration_s=2)  # warm-up
        for _ in range(args.rounds):
            results.setdefault("no limits / cache miss", []).append(run(stack, plain, **options))
            results.setdefault("cache hit", []).append(run(stack, cached, **options))
            limits_set(stack, on=True)
            results.setdefault("limits (never reached)", []).append(run(stack, plain, **options))
            limits_set(stack, on=False)
    setup = "PostgreSQL + Redis" if args.redis_url else "SQLite + local memory"
    print(f"\n{setup}, concurrency {args.concurrency}, {args.rounds} rounds of {args.duration:g} s (medians)\n")
    print("| scenario | req/s | p50 ms | p99 ms | server CPU ms/req | errors |")
    print("|---|---|---|---|---|---|")
    for name, runs in results.items():
        med = {key: statistics.median(r[key] for r in runs) for key in runs[0]}
        errors = sum(r["errors"] for r in runs)
        print(f"| {name} | {med['rps']:.0f} | {med['p50']:.2f} | {med['p99']:.2f} | {med['cpu_ms']:.3f} | {errors} |")
    reference = results["no limits / cache miss"]
    for name in ("limits (never reached)", "cache hit"):
        drops = [100 * (1 - r["rps"] / ref["rps"]) for r, ref in zip(results[name], reference, strict=True)]
        listed = ", ".join(f"{d:.1f}%" for d in drops)
        median = statistics.median(drops)
        print(f"\n- {name}: req/s drop against the same round's reference, median **{median:.1f}%** ({listed})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
