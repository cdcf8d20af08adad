"""A lean load generator for streaming chat completions: N keep-alive connections, one stream at a time each.

wrk cannot see when the first byte of a response body arrives, so this client speaks HTTP/1.1 itself
over raw asyncio streams (uvloop), which costs far less per request than an HTTP library. For every
stream it records the time to first byte (until a body chunk holding `data:` arrived) and the total
time (until the terminating chunk). A stream counts as completed only if it ended with `[DONE]`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field

import uvloop

DONE_MARK = b"data: [DONE]"


@dataclass
class StreamStats:
    """The samples of a run: per completed stream, TTFB and total time in ms; `started`: requests written."""

    ttfb_ms: list[float] = field(default_factory=list)
    total_ms: list[float] = field(default_factory=list)
    started: int = 0
    errors: int = 0
    elapsed_s: float = 0.0
    first_error: str = ""

    @property
    def completed(self) -> int:
        return len(self.total_ms)

    @property
    def rps(self) -> float:
        return self.completed / self.elapsed_s if self.elapsed_s else 0.0

    def note_error(self, error: BaseException) -> None:
        self.errors += 1
        self.first_error = self.first_error or f"{type(error).__name__}: {error}"


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100) of `values`, linearly interpolated; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


class StreamFailed(Exception):
    """The response was not a 200 event stream ending with [DONE]."""


@dataclass(frozen=True)
class StreamTarget:
    host: str
    port: int
    path: str
    body: bytes
    api_key: str = ""
    headers: tuple[str, ...] = ()  # more request header lines, "Name: value"
    done_mark: bytes = DONE_MARK  # what the last bytes of a complete stream hold; b"": a JSON answer

    def request_bytes(self) -> bytes:
        lines = [
            f"POST {self.path} HTTP/1.1",
            f"Host: {self.host}:{self.port}",
            "Content-Type: application/json",
            "Accept: text/event-stream",
            f"Content-Length: {len(self.body)}",
        ]
        if self.api_key:
            lines.append(f"Authorization: Bearer {self.api_key}")
        lines.extend(self.headers)
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + self.body


def stream_load(target: StreamTarget, *, concurrency: int, duration_s: float) -> StreamStats:
    """Keep `concurrency` streams going for `duration_s`; streams in flight at the end are finished, not cut."""
    return uvloop.run(_stream_load(target, concurrency, duration_s))


async def _stream_load(target: StreamTarget, concurrency: int, duration_s: float) -> StreamStats:
    stats = StreamStats()
    begin = time.perf_counter()
    deadline = begin + duration_s
    await asyncio.gather(*(_worker(target, deadline, stats) for _ in range(concurrency)))
    stats.elapsed_s = time.perf_counter() - begin
    return stats


async def _worker(target: StreamTarget, deadline: float, stats: StreamStats) -> None:
    """One connection: streams back to back until the deadline; reconnects after an error or a close."""
    request = target.request_bytes()
    reader = writer = None
    while time.perf_counter() < deadline:
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection(target.host, target.port)
            stats.started += 1
            ttfb, total, keep_alive = await _one_stream(reader, writer, request, target.done_mark)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, StreamFailed, ValueError) as exc:
            stats.note_error(exc)
            writer = await _close(writer)
            await asyncio.sleep(0.01)
            continue
        stats.ttfb_ms.append(ttfb * 1000)
        stats.total_ms.append(total * 1000)
        if not keep_alive:
            writer = await _close(writer)
    await _close(writer)


async def _close(writer: asyncio.StreamWriter | None) -> None:
    if writer is not None:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    return None


async def _one_stream(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes, done_mark: bytes = DONE_MARK
) -> tuple[float, float, bool]:
    """Send one request and read its chunked event stream; returns (ttfb s, total s, connection reusable)."""
    begin = time.perf_counter()
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    status, headers = _parse_head(head)
    if status != 200:
        raise StreamFailed(f"HTTP {status}")
    if "content-length" in headers and not done_mark:  # a whole JSON answer (bench.anthropic's non-streamed runs)
        await reader.readexactly(int(headers["content-length"]))
        total = time.perf_counter() - begin
        return total, total, headers.get("connection") != "close"
    if headers.get("transfer-encoding") != "chunked":
        raise StreamFailed("expected a chunked event stream")
    ttfb: float | None = None
    tail = b""
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";", 1)[0], 16)
        if size == 0:
            await reader.readuntil(b"\r\n")  # no trailers: the empty line that ends the message
            break
        chunk = (await reader.readexactly(size + 2))[:-2]
        if ttfb is None and b"data:" in chunk:
            ttfb = time.perf_counter() - begin
        tail = (tail + chunk)[-64:]
    total = time.perf_counter() - begin
    if ttfb is None or done_mark not in tail:
        raise StreamFailed(f"the stream did not end with {done_mark.decode()}")
    return ttfb, total, headers.get("connection") != "close"


def _parse_head(head: bytes) -> tuple[int, dict[str, str]]:
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    status = int(status_line.split(" ", 2)[1])
    headers = {}
    for line in header_lines:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip().lower()
    return status, headers
