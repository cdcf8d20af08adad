"""In-process cost of the hot path's Redis and rate-limit steps, without a server: admitting a call with
two limits (in memory and on Redis) and the circuit read of one call (on Redis), at concurrency 1 and 8.

    .venv/bin/python -m bench.limits_micro [--redis-url redis://127.0.0.1:6379/3] [--calls 5000]
"""

import argparse
import asyncio
import os
import time

import django


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/3")
    parser.add_argument("--calls", type=int, default=5000)
    args = parser.parse_args(argv)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "routerweb.settings")
    os.environ.setdefault("SECRET_KEY", "bench")
    django.setup()
    import uvloop

    from routing.rate_windows import MemoryWindows, RedisWindows
    from routing.ratelimit import Limit, LimitSet, RateLimiter
    from routing.redis_pipe import RedisPipe
    from routing.shared_state import RedisState

    limits = LimitSet((Limit("requests", 10**9, "key", 1), Limit("tokens", 2 * 10**9, "key", 1)))
    memory = RateLimiter(MemoryWindows())
    redis = RateLimiter(RedisWindows(RedisPipe(args.redis_url), key_prefix="bench-micro"))
    state = RedisState(args.redis_url, "bench-micro:")
    steps = {
        "admit, two limits, memory": lambda: memory.admit(limits, tokens=100),
        "admit, two limits, Redis": lambda: redis.admit(limits, tokens=100),
        "circuit read (MGET of 6 keys), Redis": lambda: state.get_many(["a", "b", "c", "d", "e", "f"]),
    }

    async def measure(step, concurrency: int) -> float:
        async def worker(n: int) -> None:
            for _ in range(n):
                await step()

        await worker(300)
        started = time.process_time()
        await asyncio.gather(*(worker(args.calls // concurrency) for _ in range(concurrency)))
        return (time.process_time() - started) / args.calls * 1e6

    async def run() -> None:
        print("| step | CPU µs per call, concurrency 1 | concurrency 8 |")
        print("|---|---:|---:|")
        for name, step in steps.items():
            print(f"| {name} | {await measure(step, 1):.1f} | {await measure(step, 8):.1f} |")

    uvloop.run(run())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
