"""What rate limits cost the worker in instructions per request, counted by valgrind's callgrind: a figure
that does not move with the machine's load, unlike requests per second on a shared 2-core host.

routerweb (one worker, the production command) runs under `valgrind --tool=callgrind`, in front of the
fake upstream's instant model `fast`. For each phase, 100 warm-up requests, then the counters are zeroed,
`--requests` requests are sent (8 at a time), and the counters are dumped; the event-loop thread's
instructions over the requests are the phase's figure. Phases alternate, `--rounds` times: the bench
key without limits, then with limits it never reaches (requests and tokens per minute). Needs valgrind
(Debian's package).

    .venv/bin/python -m bench.limits_instructions [--redis-url redis://127.0.0.1:6379/3] [--database-url …]
        [--keep DIR]   # the dumps, for `callgrind_annotate DIR/callgrind.<pid>.<n>-01`
"""

import argparse
import asyncio
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import httpx

from . import harness
from .harness import HOST, BenchStack, server_command
from .limits_cache import MESSAGES, limits_set

WARM_UP = 100
CONCURRENCY = 8
START_TIMEOUT_S = 600.0  # start-up under valgrind is some 50 times slower


def callgrind_command(out_dir: Path):
    def command(port: int) -> list[str]:
        out = str(out_dir / "callgrind.%p")
        argv = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", "--separate-threads=yes"]
        return [*argv, *server_command(host=HOST, port=port)]

    return command


async def requests_send(stack: BenchStack, count: int, *, check: bool = True) -> set[bool]:
    """`count` chat requests, CONCURRENCY at a time; whether the answers carried rate-limit headers.
    `check`: an answer other than 200 stops the run (not in the warm-up, where the worker, slowed down
    by valgrind, may still be connecting to the upstream after a registry change)."""
    limited = set()
    slots = asyncio.Semaphore(CONCURRENCY)
    body = {"model": "fast", "messages": MESSAGES}
    async with httpx.AsyncClient(timeout=120, headers=stack.auth_headers) as client:

        async def one() -> None:
            async with slots:
                answer = await client.post(stack.routerweb.url + "/v1/chat/completions", json=body)
                if check and answer.status_code != 200:
                    raise RuntimeError(f"routerweb answered {answer.status_code}: {answer.text[:300]}")
                limited.add("x-ratelimit-limit-requests" in answer.headers)

        await asyncio.gather(*(one() for _ in range(count)))
    return limited


def event_loop_instructions(dump: Path) -> int:
    for line in dump.read_text().splitlines():
        if line.startswith("summary:"):
            return int(line.split()[1])
    raise RuntimeError(f"no summary in {dump}")


def phase(stack: BenchStack, out_dir: Path, label: str, count: int, *, limited: bool) -> float:
    """The event-loop thread's instructions per request over `count` requests."""
    pid = str(stack.routerweb.pid)
    asyncio.run(requests_send(stack, WARM_UP, check=False))
    subprocess.run(["callgrind_control", "--zero", pid], check=True, capture_output=True)
    seen = asyncio.run(requests_send(stack, count))
    if seen != {limited}:
        raise RuntimeError(f"{label}: rate-limit headers {'missing' if limited else 'present'}")
    subprocess.run(["callgrind_control", f"--dump={label}", pid], check=True, capture_output=True)
    time.sleep(1)
    # One file per thread; the event loop is the first thread. Dumps are numbered in order.
    dumps = sorted(out_dir.glob(f"callgrind.{pid}.*-01"), key=lambda path: int(path.name.split(".")[-1][:-3]))
    return event_loop_instructions(dumps[-1]) / count


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url")
    parser.add_argument("--redis-url")
    parser.add_argument("--requests", type=int, default=600)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--keep", type=Path, help="keep the callgrind dumps in this folder (for callgrind_annotate)")
    args = parser.parse_args(argv)
    if shutil.which("valgrind") is None:
        parser.error("valgrind is not installed (apt-get install valgrind)")
    harness.START_TIMEOUT_S = START_TIMEOUT_S
    out_dir = Path(tempfile.mkdtemp(prefix="routerweb-callgrind-")) if args.keep is None else args.keep
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    try:
        command = callgrind_command(out_dir)
        with BenchStack(database_url=args.database_url, redis_url=args.redis_url, routerweb_argv=command) as stack:
            for round_number in range(args.rounds):
                plain = phase(stack, out_dir, f"plain{round_number}", args.requests, limited=False)
                limits_set(stack, on=True)
                limited = phase(stack, out_dir, f"limited{round_number}", args.requests, limited=True)
                limits_set(stack, on=False)
                rows.append((plain, limited))
    finally:
        if args.keep is None:
            shutil.rmtree(out_dir, ignore_errors=True)
    setup = "PostgreSQL + Redis" if args.redis_url else "SQLite + local memory"
    print(f"\n{setup}: event-loop instructions per request, {args.requests} requests per phase\n")
    print("| round | no limits | limits (never reached) | added | added % |")
    print("|---|---:|---:|---:|---:|")
    for number, (plain, limited) in enumerate(rows, 1):
        added = limited - plain
        print(f"| {number} | {plain:,.0f} | {limited:,.0f} | {added:+,.0f} | {100 * added / plain:+.1f}% |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
