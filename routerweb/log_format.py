"""Log lines: JSON (`LOG_FORMAT=json`, one object per record, a call's fields at the top level), and the
console handler that writes them off the event loop."""

import atexit
import json
import logging
import queue
import sys
import threading
from datetime import UTC, datetime
from typing import TextIO


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
        }
        call = getattr(record, "call", None)
        if call is not None:
            line["event"] = "call"
            line.update(call)
        else:
            line["message"] = record.getMessage()
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str, separators=(",", ":"))


class BackgroundConsoleHandler(logging.Handler):
    """Logs to stderr from a thread of its own, so that the event loop never waits on a write.

    `emit` only queues the record; the thread formats what is queued and writes it in one write per
    batch (a busy worker logs one line per call: one system call each on the event loop cost more than
    the rest of the line). The queue is bounded: when stderr is slower than the worker for long, records
    are dropped rather than held, and the number dropped is written once the thread catches up.
    """

    QUEUE_MAX = 10_000

    def __init__(self, stream: TextIO | None = None, *, queue_max: int = QUEUE_MAX) -> None:
        super().__init__()
        self.stream = stream or sys.stderr
        self.dropped = 0
        self._queue: queue.Queue[logging.LogRecord | None] = queue.Queue(queue_max)
        self._thread = threading.Thread(target=self._write_batches, name="routerweb-log", daemon=True)
        self._thread.start()
        atexit.register(self.close)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._queue.put_nowait(record)
        except queue.Full:
            self.dropped += 1

    def close(self) -> None:
        """Write what is queued, then stop the thread."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join(timeout=5)
        super().close()

    def _write_batches(self) -> None:
        while True:
            batch = [self._queue.get()]
            while len(batch) < self._queue.maxsize:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            self._write(batch)
            if None in batch:
                return

    def _write(self, batch: list[logging.LogRecord | None]) -> None:
        lines = []
        for record in batch:
            if record is None:
                continue
            try:
                lines.append(self.format(record) + "\n")
            except Exception:
                self.handleError(record)
        dropped, self.dropped = self.dropped, 0
        if dropped:
            lines.append(f"routerweb: {dropped} log records dropped (stderr could not keep up)\n")
        try:
            self.stream.write("".join(lines))
            self.stream.flush()
        except Exception:  # stderr closed or broken: nothing else to write it to
            pass
