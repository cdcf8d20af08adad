"""Where routerweb's CPU per request goes: profile one benchmark scenario (default: non-streaming, 0 ms upstream).

Usage: `.venv/bin/python -m bench.profile_gateway [--profiler py-spy|cprofile] [--scenario fast]
[--concurrency 8] [--duration 10] [--top 25] [--save DIR] [--database-url URL] [--redis-url URL]`.

The set-up is the gateway benchmark's (bench.harness.BenchStack); after a warm-up, wrk runs the
scenario while the profiler watches routerweb:

- `py-spy` (default when installed; `pip install py-spy`, it is not a project requirement): samples
  every thread of the unmodified server from outside, so the numbers are not inflated. Shares are of
  the samples in which a thread was running; ms/request scales them by the CPU per request read from
  /proc during the same run.
- `cprofile`: runs the server through `bench.profiled_server` (the standard library only). It sees the
  event-loop thread alone and its per-call overhead inflates small functions; good for call counts.
"""

from __future__ import annotations

import argparse
import pstats
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from .gateway import SCENARIOS, request_body
from .harness import BenchError, BenchStack, budgets_create, routerweb_command_through
from .wrk import WrkError, WrkResult, wrk_run

PROJECT_PACKAGES = frozenset({"routing", "billing", "routerweb", "bench"})
SAMPLE_RATE_HZ = 250
# Leaf frames of threads that wait (on a lock, queue or timeout) yet are not always flagged idle by py-spy.
IDLE_LEAVES = frozenset(
    {
        "_worker (concurrent/futures/thread.py)",
        "Condition.wait (threading.py)",
        "Event.wait (threading.py)",
        "Thread._wait_for_tstate_lock (threading.py)",
    }
)
WARMUP_S = 3.0


@dataclass(frozen=True)
class LoadRun:
    """The wrk run the profile covers, with routerweb's CPU per answered request from /proc."""

    wrk: WrkResult
    cpu_ms_per_request: float


@dataclass(frozen=True)
class Sample:
    """One collapsed py-spy stack: thread name, frames outermost first, and how often it was seen."""

    thread: str
    frames: tuple[str, ...]
    count: int


# ---------------------------------------------------------------------------- load


def run_load(stack: BenchStack, scenario_name: str, concurrency: int, duration_s: float) -> LoadRun:
    scenario = next(s for s in SCENARIOS if s.name == scenario_name)
    if scenario.stream:
        raise BenchError("profiling runs wrk, which has no streaming scenario; use fast or slow50")
    body_file = stack.tmp / f"profile-{scenario.name}.json"
    body_file.write_bytes(request_body(scenario.model, stream=False))
    url = stack.routerweb.url + "/v1/chat/completions"
    cpu_before = stack.routerweb.cpu_seconds()
    result = wrk_run(url, body_file, api_key=stack.api_key, connections=concurrency, duration_s=duration_s)
    cpu_ms = (stack.routerweb.cpu_seconds() - cpu_before) * 1000
    return LoadRun(result, cpu_ms / max(1, result.requests))


def warm_up(stack: BenchStack, scenario: str, concurrency: int) -> None:
    run_load(stack, scenario, concurrency, WARMUP_S)


# ---------------------------------------------------------------------------- py-spy


def py_spy_path() -> str:
    found = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(found).exists():
        raise BenchError("py-spy is not installed: `.venv/bin/pip install py-spy`, or use --profiler cprofile")
    return found


def profile_py_spy(stack: BenchStack, args: argparse.Namespace) -> tuple[LoadRun, list[Sample]]:
    """Record routerweb with py-spy (all threads, idle excluded) while wrk runs; returns the samples."""
    output = stack.tmp / "py-spy.txt"
    argv = [py_spy_path(), "record", "--pid", str(stack.routerweb.pid), "--subprocesses", "--rate", str(SAMPLE_RATE_HZ)]
    argv += ["--duration", str(round(args.duration)), "--format", "raw", "--threads", "--output", str(output)]
    spy = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(0.5)  # py-spy attaches
        load = run_load(stack, args.scenario, args.concurrency, args.duration - 0.5)
        _, stderr = spy.communicate(timeout=30)
    finally:
        if spy.poll() is None:
            spy.kill()
    if not output.exists():
        raise BenchError(f"py-spy wrote no profile: {stderr.strip()}")
    _save(output, args.save)
    samples = parse_collapsed(output.read_text())
    return load, [s for s in samples if not s.frames or function_of(s.frames[-1]) not in IDLE_LEAVES]


def parse_collapsed(text: str) -> list[Sample]:
    """py-spy's raw (collapsed) format with --threads: `thread (TID): NAME;frame;frame COUNT` per line."""
    samples = []
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        thread, *frames = stack.split(";")
        samples.append(Sample(thread.partition(": ")[2] or thread, tuple(frames), int(count)))
    return samples


def function_of(frame: str) -> str:
    """`name (path/file.py:123)` -> `name (path/file.py)`: one entry per function, not per line."""
    name, _, where = frame.partition(" (")
    return f"{name} ({where.rsplit(':', 1)[0]})" if where else name


def module_path(frame: str) -> str:
    return frame.partition(" (")[2].rsplit(":", 1)[0]


def top_package(frame: str) -> str:
    path = module_path(frame)
    first = path.split("/", 1)[0].removesuffix(".py")
    return first.strip("<>").split(" ")[-1] if first.startswith("<") else first


def is_stdlib(frame: str) -> bool:
    package = top_package(frame)
    return package in sys.stdlib_module_names or package in ("runpy", "frozen")


def area_of(frames: tuple[str, ...]) -> str:
    """Who a sample's CPU is charged to: the innermost non-stdlib frame (project modules by file,
    other packages by name); stdlib frames are charged to their caller. A stack that is stdlib only
    below uvicorn's `asyncio_run` is the event loop itself (uvloop's C code and the syscalls)."""
    for frame in reversed(frames):
        if is_stdlib(frame):
            continue
        package = top_package(frame)
        if package in PROJECT_PACKAGES:
            return module_path(frame)
        if package == "uvicorn" and frame.startswith("asyncio_run"):
            return "event loop (uvloop C code, socket syscalls)"
        return package
    return "stdlib"


def py_spy_tables(samples: list[Sample], load: LoadRun, top: int) -> str:
    """Markdown: CPU by thread, by area, by function (self) and the calls out of the project's code."""
    total = sum(s.count for s in samples) or 1

    def table(title: str, counter: Counter, limit: int) -> str:
        rows = [f"| {title} | share | ms/request |", "|---|---:|---:|"]
        for key, count in counter.most_common(limit):
            share = count / total
            rows.append(f"| `{key}` | {share:.1%} | {share * load.cpu_ms_per_request:.3f} |")
        return "\n".join(rows)

    threads: Counter = Counter()
    areas: Counter = Counter()
    selfs: Counter = Counter()
    for s in samples:
        threads[s.thread] += s.count
        areas[area_of(s.frames)] += s.count
        selfs[function_of(s.frames[-1]) if s.frames else "?"] += s.count
    return "\n\n".join(
        [
            table("thread", threads, 10),
            table("charged to (stdlib charged to its caller)", areas, top),
            table("function (self time)", selfs, top),
            table("called from project code (inclusive)", boundary_calls(samples), top),
            table("project function (inclusive)", project_inclusive(samples), top),
        ]
    )


def boundary_calls(samples: Iterable[Sample]) -> Counter:
    """Inclusive samples of each outside function that project code calls directly (e.g. httpx's send)."""
    counter: Counter = Counter()
    for s in samples:
        seen = set()
        for caller, callee in zip(s.frames, s.frames[1:], strict=False):
            if top_package(caller) in PROJECT_PACKAGES and top_package(callee) not in PROJECT_PACKAGES:
                seen.add(function_of(callee))
        for name in seen:
            counter[name] += s.count
    return counter


def project_inclusive(samples: Iterable[Sample]) -> Counter:
    counter: Counter = Counter()
    for s in samples:
        for name in {function_of(f) for f in s.frames if top_package(f) in PROJECT_PACKAGES}:
            counter[name] += s.count
    return counter


# ---------------------------------------------------------------------------- cProfile


def profile_cprofile(stack: BenchStack, args: argparse.Namespace, output: Path) -> tuple[LoadRun, pstats.Stats]:
    """Toggle cProfile in the server around the wrk run (SIGUSR1/SIGUSR2); returns the stats."""
    stack.routerweb.process.send_signal(signal.SIGUSR1)
    time.sleep(0.2)
    load = run_load(stack, args.scenario, args.concurrency, args.duration)
    stack.routerweb.process.send_signal(signal.SIGUSR2)
    deadline = time.monotonic() + 30
    while not output.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(0.5)  # let the dump finish writing
    if not output.exists():
        raise BenchError("the profiled server wrote no profile")
    _save(output, args.save)
    return load, pstats.Stats(str(output))


def cprofile_tables(stats: pstats.Stats, load: LoadRun, top: int) -> str:
    """Markdown: top functions by own time, and project functions by cumulative time, per request."""
    requests = max(1, load.wrk.requests)
    entries = list(stats.stats.items())  # type: ignore[attr-defined]

    def label(func: tuple[str, int, str]) -> str:
        path, line, name = func
        short = "/".join(Path(path).parts[-2:]) if path != "~" else "built-in"
        return f"{name} ({short}:{line})"

    def table(title: str, rows: list, column: int) -> str:
        out = [f"| {title} | calls/request | ms/request |", "|---|---:|---:|"]
        for func, data in rows[:top]:
            out.append(f"| `{label(func)}` | {data[1] / requests:.2f} | {data[column] * 1000 / requests:.3f} |")
        return "\n".join(out)

    by_self = sorted(entries, key=lambda e: e[1][2], reverse=True)
    project = [e for e in entries if any(f"/{p}/" in e[0][0] for p in PROJECT_PACKAGES - {"bench"})]
    by_cumulative = sorted(project, key=lambda e: e[1][3], reverse=True)
    return "\n\n".join(
        [table("function (own time)", by_self, 2), table("project function (cumulative)", by_cumulative, 3)]
    )


# ---------------------------------------------------------------------------- command line


def _save(path: Path, directory: Path | None) -> None:
    if directory is not None:
        directory.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, directory / path.name)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.profile_gateway", description=__doc__.split("\n\n")[0])
    default = "py-spy" if shutil.which("py-spy") or Path(sys.executable).with_name("py-spy").exists() else "cprofile"
    parser.add_argument("--profiler", choices=("py-spy", "cprofile"), default=default)
    parser.add_argument("--scenario", default="fast", choices=[s.name for s in SCENARIOS if not s.stream])
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--save", type=Path, help="copy the raw profile into this directory")
    parser.add_argument("--database-url")
    parser.add_argument("--redis-url")
    parser.add_argument("--budgets", action="store_true", help="a budget on the user and one on the key")
    return parser.parse_args(argv)


def header(args: argparse.Namespace, load: LoadRun) -> str:
    return (
        f"## routerweb profile: {args.scenario}, concurrency {args.concurrency},"
        f" {args.duration:g} s, {args.profiler}\n\n"
        f"{load.wrk.requests} requests, {load.wrk.rps:.0f} req/s, p50 {load.wrk.p50_ms:.2f} ms; routerweb CPU"
        f" {load.cpu_ms_per_request:.3f} ms per request (from /proc, profiler overhead included)."
    )


def profile(args: argparse.Namespace) -> str:
    """Set up, warm up, profile one run; returns the Markdown report."""
    if args.profiler == "py-spy":
        with BenchStack(database_url=args.database_url, redis_url=args.redis_url) as stack:
            if args.budgets:
                budgets_create(stack.env)
            warm_up(stack, args.scenario, args.concurrency)
            load, samples = profile_py_spy(stack, args)
            return header(args, load) + "\n\n" + py_spy_tables(samples, load, args.top)
    with tempfile.TemporaryDirectory(prefix="routerweb-profile-") as directory:
        output = Path(directory) / "routerweb.pstats"
        command = routerweb_command_through("bench.profiled_server", "--output", str(output))
        with BenchStack(database_url=args.database_url, redis_url=args.redis_url, routerweb_argv=command) as stack:
            if args.budgets:
                budgets_create(stack.env)
            warm_up(stack, args.scenario, args.concurrency)
            load, stats = profile_cprofile(stack, args, output)
            return header(args, load) + "\n\n" + cprofile_tables(stats, load, args.top)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        print(profile(args))
    except KeyboardInterrupt:
        return 130
    except (BenchError, WrkError) as exc:
        print(f"profile failed: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
