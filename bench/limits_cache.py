"""What rate limits and the response cache cost: wrk at saturation against routerweb (one worker) in front
of the fake upstream's instant model `fast`.

Scenarios, interleaved round by round so that drift on the machine hits them alike:
- `no limits`: the bench key has no limit (the dict lookup only);
- `limits`: a second key of the same user has limits it never reaches (requests and tokens per minute:
  two counters hit and read per request, in the worker's memory or on Redis with `--redis-url`);
- `cache miss`: the same request as `no limits` (answered by the upstream, cost row written);
- `cache hit`: the request asks for the cache (`"cache": {"ttl": 3600}`), identical each time: every
  request but the first is a hit (cache_hit row written).

Each round runs `no limits`, `limits`, `limits`, `no limits` back to back (with the two keys, so
nothing changes on the server between them), then `cache hit`: a round's drop compares the two
limited runs with the two around them, so a machine that speeds up or slows down steadily during a
round weighs on both alike.

Each run's CPU per request is read for the server (its process tree, /proc), for Redis (INFO cpu: the
limits' scripts run there) and for the whole machine (/proc/stat), so a drop can be told apart from
work moved to another process.

    .venv/bin/python -m bench.limits_cache [--redis-url redis://127.0.0.1:6379/3] [--database-url …]
"""

import argparse
import json
import os
import statistics
import time

import redis

from .harness import BENCH_USER, BenchStack, api_key_create, machine_cpu_jiffies, manage
from .wrk import wrk_run

MESSAGES = [{"role": "user", "content": "hello from the limits and cache benchmark"}]
LIMITS_SET = "from routing.models import ApiKey; ApiKey.objects{only}.update(rpm_limit={rpm}, tpm_limit={tpm})"
LIMITED_KEY = "bench-limited"
SETTLE_S = 2.5  # the registry change is in force within a second on every worker


def limits_set(stack: BenchStack, *, on: bool, key_name: str = "") -> None:
    """Give the bench keys (or the one named `key_name`) limits they never reach (on), or none; update()
    is followed by a version bump."""
    only = f".filter(name={key_name!r})" if key_name else ""
    code = LIMITS_SET.format(only=only, rpm=10**9 if on else None, tpm=2 * 10**9 if on else None)
    code += "; from routing.registry_version import registry_version_bump; registry_version_bump()"
    manage(stack.env, "shell", "--no-imports", "-c", code)
    time.sleep(SETTLE_S)


def limited_key_create(stack: BenchStack) -> str:
    """A second API key of the bench user, with limits it never reaches; returns the raw key."""
    key = api_key_create(stack.env, BENCH_USER, LIMITED_KEY)
    limits_set(stack, on=True, key_name=LIMITED_KEY)
    return key


def redis_cpu_seconds(url: str | None) -> float:
    """The CPU time Redis at `url` has used (user + system, from INFO), 0 without Redis."""
    if not url:
        return 0.0
    with redis.Redis.from_url(url) as client:
        info = client.info("cpu")
    return info["used_cpu_user"] + info["used_cpu_sys"]


def run(stack: BenchStack, body_file, *, api_key: str, connections: int, duration_s: float) -> dict:
    cpu_before = stack.routerweb.cpu_seconds()
    redis_before = redis_cpu_seconds(stack.redis_url)
    machine_before = machine_cpu_jiffies()[0]
    result = wrk_run(
        stack.routerweb.url + "/v1/chat/completions",
        body_file,
        api_key=api_key,
        connections=connections,
        duration_s=duration_s,
    )
    time.sleep(1.5)
    cpu = stack.routerweb.cpu_seconds() - cpu_before
    requests = max(1, result.requests)
    machine_s = (machine_cpu_jiffies()[0] - machine_before) / os.sysconf("SC_CLK_TCK")
    return {
        "rps": result.rps,
        "p50": result.p50_ms,
        "p99": result.p99_ms,
        "cpu_ms": cpu * 1000 / requests,
        "redis_us": (redis_cpu_seconds(stack.redis_url) - redis_before) * 1e6 / requests,
        "machine_ms": machine_s * 1000 / requests,
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
        limited_key = limited_key_create(stack)
        options = {"connections": args.concurrency, "duration_s": args.duration}
        for key in (stack.api_key, limited_key):  # warm-up
            run(stack, plain, api_key=key, connections=args.concurrency, duration_s=2)
        drops = []
        for _ in range(args.rounds):
            before = run(stack, plain, api_key=stack.api_key, **options)
            limited = [run(stack, plain, api_key=limited_key, **options) for _ in range(2)]
            after = run(stack, plain, api_key=stack.api_key, **options)
            results.setdefault("no limits / cache miss", []).extend((before, after))
            results.setdefault("limits (never reached)", []).extend(limited)
            results.setdefault("cache hit", []).append(run(stack, cached, api_key=stack.api_key, **options))
            drops.append(100 * (1 - sum(r["rps"] for r in limited) / (before["rps"] + after["rps"])))
    setup = "PostgreSQL + Redis" if args.redis_url else "SQLite + local memory"
    print(f"\n{setup}, concurrency {args.concurrency}, {args.rounds} rounds of {args.duration:g} s (medians)\n")
    print("| scenario | req/s | p50 ms | p99 ms | server CPU ms/req | Redis CPU µs/req | machine CPU ms/req | errors |")
    print("|---|---|---|---|---|---|---|---|")
    for name, runs in results.items():
        med = {key: statistics.median(r[key] for r in runs) for key in runs[0]}
        errors = sum(r["errors"] for r in runs)
        redis_text = f"{med['redis_us']:.1f}" if args.redis_url else "–"
        print(
            f"| {name} | {med['rps']:.0f} | {med['p50']:.2f} | {med['p99']:.2f} | {med['cpu_ms']:.3f}"
            f" | {redis_text} | {med['machine_ms']:.3f} | {errors} |"
        )
    listed = ", ".join(f"{drop:.1f}%" for drop in drops)
    print(f"\n- limits: req/s drop against the runs around them, median **{statistics.median(drops):.1f}%**")
    print(f"  (mean {statistics.mean(drops):.1f}%; rounds: {listed})")
    reference = results["no limits / cache miss"][1::2]  # each round's run right before its cache hits
    gains = [r["rps"] / ref["rps"] for r, ref in zip(results["cache hit"], reference, strict=True)]
    print(f"- cache hit: {statistics.median(gains):.2f}x the req/s of a miss (median of the rounds)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
