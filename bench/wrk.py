"""Running wrk with `bench/post.lua` and reading its `--latency` report."""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

LUA_SCRIPT = Path(__file__).with_name("post.lua")
THREADS = 2

_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}
_DURATION = r"([\d.]+)(us|ms|s|m|h)"


@dataclass(frozen=True)
class WrkResult:
    """What wrk reported: requests completed and sent (in flight at the end included), rate, latency (ms), failures."""

    requests: int
    sent: int
    duration_s: float
    rps: float
    p50_ms: float
    p75_ms: float
    p90_ms: float
    p99_ms: float
    non_2xx: int
    socket_errors: int

    @property
    def errors(self) -> int:
        return self.non_2xx + self.socket_errors


class WrkError(RuntimeError):
    """wrk failed or printed a report this parser does not understand."""


def wrk_path() -> str:
    path = shutil.which("wrk")
    if path is None:
        raise WrkError("wrk is not installed (apt-get install wrk)")
    return path


def wrk_run(url: str, body_file: Path, *, api_key: str = "", connections: int, duration_s: float) -> WrkResult:
    """POST `body_file` to `url` over `connections` keep-alive connections for `duration_s` seconds."""
    argv = [
        wrk_path(),
        f"-t{min(THREADS, connections)}",
        f"-c{connections}",
        f"-d{max(1, round(duration_s))}s",
        "--latency",
        "--timeout",
        "10s",
        "-s",
        str(LUA_SCRIPT),
        url,
        "--",
        str(body_file),
        api_key,
    ]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=duration_s + 60, check=False)
    if result.returncode != 0:
        raise WrkError(f"wrk exited with {result.returncode}: {result.stderr.strip() or result.stdout.strip()}")
    return wrk_parse(result.stdout)


def wrk_parse(output: str) -> WrkResult:
    """Parse wrk's text report (run with `--latency`); raises WrkError when a required line is missing."""
    percentiles = {
        int(p): _ms(value, unit) for p, value, unit in re.findall(rf"^\s+(\d+)%\s+{_DURATION}", output, re.M)
    }
    totals = re.search(rf"^\s*(\d+) requests in {_DURATION}", output, re.M)
    rps = re.search(r"^Requests/sec:\s+([\d.]+)", output, re.M)
    if totals is None or rps is None or not {50, 75, 90, 99} <= percentiles.keys():
        raise WrkError(f"cannot parse wrk output:\n{output}")
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    sent = re.search(r"^bench: sent (\d+)", output, re.M)
    sockets = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    return WrkResult(
        requests=int(totals.group(1)),
        sent=int(sent.group(1)) if sent else int(totals.group(1)),
        duration_s=_ms(totals.group(2), totals.group(3)) / 1000,
        rps=float(rps.group(1)),
        p50_ms=percentiles[50],
        p75_ms=percentiles[75],
        p90_ms=percentiles[90],
        p99_ms=percentiles[99],
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        socket_errors=sum(int(n) for n in sockets.groups()) if sockets else 0,
    )


def _ms(value: str, unit: str) -> float:
    return float(value) * _UNITS_MS[unit]
