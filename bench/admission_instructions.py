"""What admitting a call costs in instructions, in process: the rate limits' step alone, counted by
valgrind's callgrind, so the figure does not move with the machine's load.

Each scenario runs in a child process under callgrind, once with no calls and once with `--calls`
calls (8 at a time, as concurrent requests share the Redis pipe's writes); the difference over the
calls is the scenario's instructions per call. Hash randomisation is off in the children
(PYTHONHASHSEED=0), so a rerun gives the same count to within a few hundred instructions.

- `circuit read, Redis`: what every call does on Redis without limits (MGET of 6 keys on the pipe);
- `circuit read + admission, Redis`: a call with two limits (requests and tokens per minute), the
  admission sent with the read as the gateway sends it (routing/admission.py);
- `circuit read + admission, memory`: the same with the limits counted in the worker's memory.

The admission's own cost is a scenario's count less the circuit read's. Needs valgrind and Redis.

    .venv/bin/python -m bench.admission_instructions [--redis-url redis://127.0.0.1:6379/3] [--calls 4000]
"""

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

SCENARIOS = {
    "read": "circuit read, Redis",
    "redis": "circuit read + admission, Redis",
    "memory": "circuit read + admission, memory",
}
CONCURRENCY = 8
CIRCUIT_KEYS = ["a", "b", "c", "d", "e", "f"]


def child(scenario: str, calls: int, redis_url: str) -> None:
    """Run `calls` calls of `scenario` (after a warm-up of 50), in this process."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "routerweb.settings")
    os.environ.setdefault("SECRET_KEY", "bench")
    import django

    django.setup()
    import uvloop

    from routing.rate_windows import MemoryWindows, RedisWindows
    from routing.ratelimit import Limit, LimitSet, RateLimiter
    from routing.redis_pipe import redis_pipe
    from routing.shared_state import RedisState

    limits = LimitSet((Limit("requests", 10**9, "key", 1), Limit("tokens", 2 * 10**9, "key", 1)))
    windows = MemoryWindows() if scenario == "memory" else RedisWindows(redis_pipe(redis_url), key_prefix="bench-ai")
    limiter = RateLimiter(windows)
    state = RedisState(redis_url, "bench-ai:")

    async def one() -> None:
        if scenario == "read":
            await state.get_many(CIRCUIT_KEYS)
            return
        admitting = limiter.admit(limits, tokens=100)
        await state.get_many(CIRCUIT_KEYS)
        admission = await admitting
        if admission is None or len(admission.headers) != 6:
            raise RuntimeError(f"not admitted with its headers: {admission}")

    async def worker(count: int) -> None:
        for _ in range(count):
            await one()

    async def run() -> None:
        await worker(50)
        await asyncio.gather(*(worker(calls // CONCURRENCY) for _ in range(CONCURRENCY)))

    uvloop.run(run())


def instructions(scenario: str, calls: int, redis_url: str, out_dir: Path) -> int:
    out = out_dir / f"callgrind.{scenario}.{calls}"
    command = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"]
    command += [sys.executable, "-m", "bench.admission_instructions", "--child", scenario, str(calls)]
    command += ["--redis-url", redis_url]
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=Path(__file__).parent.parent)
    if done.returncode != 0:
        raise RuntimeError(f"{scenario} ({calls} calls) failed:\n{done.stderr[-3000:]}")
    for line in out.read_text().splitlines():
        if line.startswith("summary:"):
            return int(line.split()[1])
    raise RuntimeError(f"no summary in {out}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/3")
    parser.add_argument("--calls", type=int, default=4000)
    parser.add_argument("--child", nargs=2, metavar=("SCENARIO", "CALLS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child[0], int(args.child[1]), args.redis_url)
        return 0
    if shutil.which("valgrind") is None:
        parser.error("valgrind is not installed (apt-get install valgrind)")
    calls = args.calls // CONCURRENCY * CONCURRENCY
    out_dir = Path(tempfile.mkdtemp(prefix="routerweb-admission-"))
    try:
        start_up = instructions("read", 0, args.redis_url, out_dir)
        per_call = {
            scenario: (instructions(scenario, calls, args.redis_url, out_dir) - start_up) / calls
            for scenario in SCENARIOS
        }
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)
    print(f"\nInstructions per call, {calls} calls, {CONCURRENCY} at a time\n")
    print("| scenario | instructions per call | the admission's own |")
    print("|---|---:|---:|")
    for scenario, label in SCENARIOS.items():
        own = "" if scenario == "read" else f"{per_call[scenario] - per_call['read']:,.0f}"
        print(f"| {label} | {per_call[scenario]:,.0f} | {own} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
