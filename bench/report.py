"""The gateway benchmark's results and their Markdown: the table, the headline numbers, docs/benchmarks.md."""

from __future__ import annotations

import math
import os
import platform
import re
import statistics
import subprocess
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

DOCS_PATH = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
TARGET_ADDED_P50_MS = 2.0
TARGET_CPU_MS = 1.0
REFERENCE_GATEWAY_CPU_MS = 12.5  # the most used Python gateway, ../shared/perf-notes.md
DISTURBED_PCT = 10.0  # CPU share of other processes during a run above which the run is flagged


@dataclass(frozen=True)
class Scenario:
    """One kind of request: routerweb model `model`, or `upstream_model` when sent to the fake upstream directly."""

    name: str
    title: str
    model: str
    upstream_model: str
    stream: bool


@dataclass(frozen=True)
class LoadResult:
    """What one load run produced, whichever generator ran it (latencies in ms).

    `sent` counts requests written, `requests` those answered completely; the difference is what the
    load generator cut off when its time was up (wrk does; the streaming client finishes its streams).
    """

    requests: int
    sent: int
    errors: int
    rps: float
    p50_ms: float
    p99_ms: float
    ttfb_p50_ms: float | None = None
    ttfb_p99_ms: float | None = None


@dataclass(frozen=True, kw_only=True)
class Measurement(LoadResult):
    """One load run against one target ("routerweb" or "direct") at one concurrency.

    Latencies are in ms; for streams p50/p99 are the total time and `ttfb_*` the time to the first
    `data:` chunk. `requests` were answered completely, `sent` were written (the load generator may cut
    some off at the end). `cpu_ms_per_request` is the target server's CPU over `requests`;
    `machine_busy_pct` how busy all CPUs were meanwhile, `other_busy_pct` how much of that was not the
    benchmark's own processes (anything above a few % means the numbers are disturbed). `forwarded`
    (chat requests the fake upstream received) and `rows` (call rows written) are set for routerweb
    runs only.
    """

    scenario: Scenario
    target: str
    concurrency: int
    cpu_ms_per_request: float
    machine_busy_pct: float
    other_busy_pct: float
    forwarded: int | None = None
    rows: int | None = None


@dataclass(frozen=True)
class BillingCheck:
    """Call rows after the run vs requests sent through routerweb (warm-up included).

    Every request routerweb answered needs exactly one row, and no request more than one:
    `completed <= rows <= sent`. Requests cut off in flight (sent, not completed) may or may not have
    one, depending on how far routerweb got before it saw the client leave.
    """

    rows: int
    sent: int
    completed: int
    forwarded: int

    @property
    def consistent(self) -> bool:
        return self.completed <= self.rows <= self.sent

    def verdict(self) -> str:
        if self.rows == self.sent:
            return "they match exactly"
        if self.consistent:
            return (
                f"every answered request has its row; {self.sent - self.rows} of the"
                f" {self.sent - self.completed} requests cut off in flight have none"
            )
        if self.rows < self.completed:
            return f"**{self.completed - self.rows} answered requests have no row**"
        return f"**{self.rows - self.sent} rows more than requests sent**"


@dataclass(frozen=True)
class RunInfo:
    command: str
    date: str
    machine: str
    database: str
    cache: str
    duration_s: float
    retries: int


# ---------------------------------------------------------------------------- lookups


def find(results: list[Measurement], scenario: str, target: str, concurrency: int) -> Measurement | None:
    for m in results:
        if m.scenario.name == scenario and m.target == target and m.concurrency == concurrency:
            return m
    return None


def added_p50_ms(results: list[Measurement], m: Measurement) -> float | None:
    """routerweb's p50 minus the direct p50 of the same scenario and concurrency."""
    direct = find(results, m.scenario.name, "direct", m.concurrency)
    if m.target != "routerweb" or direct is None:
        return None
    return m.p50_ms - direct.p50_ms


def added_ttfb_p50_ms(results: list[Measurement], m: Measurement) -> float | None:
    direct = find(results, m.scenario.name, "direct", m.concurrency)
    if m.target != "routerweb" or direct is None or m.ttfb_p50_ms is None or direct.ttfb_p50_ms is None:
        return None
    return m.ttfb_p50_ms - direct.ttfb_p50_ms


# ---------------------------------------------------------------------------- markdown


def _num(value: float | None, digits: int = 2, sign: bool = False) -> str:
    if value is None or math.isnan(value):
        return "–"
    return f"{value:+.{digits}f}" if sign else f"{value:.{digits}f}"


def results_table(results: list[Measurement]) -> str:
    """One row per measurement; CPU is routerweb's for routerweb rows, the fake upstream's for direct rows."""
    lines = [
        "| scenario | conc. | target | req/s | p50 ms | p99 ms | added p50 ms | TTFB p50 ms | TTFB p99 ms"
        " | server CPU ms/req | machine CPU busy (not ours) | errors |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for m in results:
        lines.append(
            f"| {m.scenario.title} | {m.concurrency} | {m.target} | {m.rps:.0f} | {_num(m.p50_ms)} | {_num(m.p99_ms)}"
            f" | {_num(added_p50_ms(results, m), sign=True)} | {_num(m.ttfb_p50_ms)} | {_num(m.ttfb_p99_ms)}"
            f" | {_num(m.cpu_ms_per_request, 3)} | {m.machine_busy_pct:.0f}% ({m.other_busy_pct:.0f}%) | {m.errors} |"
        )
    return "\n".join(lines)


def billing_table(results: list[Measurement], check: BillingCheck) -> str:
    lines = [
        "| scenario | conc. | sent | answered | received by the upstream | call rows |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for m in results:
        if m.target == "routerweb":
            lines.append(
                f"| {m.scenario.title} | {m.concurrency} | {m.sent} | {m.requests} | {m.forwarded} | {m.rows} |"
            )
    totals = f"{check.sent} | {check.completed} | {check.forwarded} | **{check.rows}**"
    lines.append(f"| **total, warm-up and target runs included** | | {totals} |")
    return "\n".join(lines)


def headlines(results: list[Measurement], check: BillingCheck, target_added: list[float]) -> list[str]:
    """The numbers the targets are about, as Markdown bullet points."""
    lines = []
    if target_added:
        added = statistics.median(target_added)
        verdict = "met" if added <= TARGET_ADDED_P50_MS else "**not met**"
        runs = ", ".join(_num(a) for a in target_added)
        lines.append(
            f"- Added p50 latency in front of a 50 ms upstream at concurrency 8: **{_num(added)} ms**, the median"
            f" of {len(target_added)} runs ({runs} ms; the first is the table's) (target ≤ {TARGET_ADDED_P50_MS:g}"
            f" ms: {verdict})."
        )
    fast = find(results, "fast", "routerweb", 8)
    direct = find(results, "fast", "direct", 8)
    if fast is not None:
        upstream = f"; the fake upstream alone: {direct.cpu_ms_per_request:.3f} ms" if direct else ""
        lines.append(
            f"- routerweb CPU per request, non-streaming, 0 ms upstream, concurrency 8: "
            f"**{fast.cpu_ms_per_request:.2f} ms** (target near {TARGET_CPU_MS:g} ms{upstream};"
            f" the most used Python gateway: ~{REFERENCE_GATEWAY_CPU_MS:g} ms)."
        )
    stream = find(results, "stream50", "routerweb", 8)
    if stream is not None:
        lines.append(
            f"- Streaming, concurrency 8: TTFB p50 {_num(stream.ttfb_p50_ms)} ms through routerweb,"
            f" added {_num(added_ttfb_p50_ms(results, stream), sign=True)} ms;"
            f" routerweb CPU {stream.cpu_ms_per_request:.2f} ms per stream."
        )
    worst = max(results, key=lambda m: m.other_busy_pct, default=None)
    if worst is not None and worst.other_busy_pct > DISTURBED_PCT:
        lines.append(
            f"- **Disturbed**: other processes used up to {worst.other_busy_pct:.0f}% of the CPUs during a run"
            f" ({worst.scenario.title}, {worst.target}, concurrency {worst.concurrency}); rerun on a quiet machine."
        )
    lines.append(
        f"- Cost rows: {check.rows} `billing_call` rows for {check.sent} requests sent through routerweb"
        f" ({check.completed} answered; wrk cuts the requests in flight when its time is up): {check.verdict()}."
    )
    return lines


def section_markdown(info: RunInfo, results: list[Measurement], check: BillingCheck, target_added: list[float]) -> str:
    """The docs section for one database set-up (also what the bench prints)."""
    return "\n".join(
        [
            f"### {info.database}; cache: {info.cache}",
            "",
            f"- Command: `{info.command}`",
            f"- Date: {info.date}",
            f"- Machine: {info.machine}",
            f"- Database: {info.database}; cache: {info.cache}",
            f"- Each run: {info.duration_s:g} s; wrk `-t2` for non-streaming, the bench's asyncio client for streams."
            f" A run starts once other processes use < 5% of the CPUs and is repeated (up to {info.retries} times)"
            " when they used more than 10% during it; the bracketed figures show what was left.",
            "",
            results_table(results),
            "",
            *headlines(results, check, target_added),
            "",
            "Cost rows per scenario (counted after each run):",
            "",
            billing_table(results, check),
        ]
    )


# ---------------------------------------------------------------------------- docs/benchmarks.md


def markers(key: str) -> tuple[str, str]:
    """The comments around a bench's section of docs/benchmarks.md: `<!-- bench:KEY:start -->`, `…:end -->`."""
    return f"<!-- bench:{key}:start -->", f"<!-- bench:{key}:end -->"


def docs_update(text: str, key: str, section: str) -> str:
    """`text` with the part between the `key` markers replaced by `section` (appended when missing)."""
    start, end = markers(key)
    block = f"{start}\n{section.strip()}\n{end}"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    if pattern.search(text):
        return pattern.sub(lambda _: block, text, count=1)
    return text.rstrip("\n") + "\n\n" + block + "\n"


def docs_write(key: str, section: str, path: Path = DOCS_PATH) -> None:
    text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(docs_update(text, key, section), encoding="utf-8")


# ---------------------------------------------------------------------------- environment


def machine_description() -> str:
    """CPUs, CPU model, kernel, Python and the server stack's versions, plus the shared-CPU caveat."""
    return (
        f"{machine_summary(('Django', 'uvicorn', 'uvloop', 'httptools'))}, {_wrk_version()}. wrk (or the"
        " streaming client), the fake upstream and routerweb share these CPUs; nothing is pinned, so the servers"
        " compete with the load generator."
    )


def machine_summary(packages: tuple[str, ...]) -> str:
    """CPUs, CPU model, kernel, Python and the installed versions of `packages`."""
    versions = ", ".join(f"{name} {_version(name)}" for name in packages)
    system = f"Linux {platform.release()}, Python {platform.python_version()}"
    return f"{os.cpu_count()} CPUs ({_cpu_model()}), {system}, {versions}"


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "?"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine()


def _wrk_version() -> str:
    try:
        out = subprocess.run(["wrk", "--version"], capture_output=True, text=True, timeout=5, check=False)
    except OSError:
        return "wrk ?"
    match = re.search(r"wrk ([^\s]+)", out.stdout + out.stderr)
    return f"wrk {match.group(1)}" if match else "wrk ?"
