"""Writing call rows off the request path: a durable local spool, then batched inserts.

`CallRecorder.record(row)` appends the row to this process's spool file as a JSON line (one
`write()`: once it returns, the row survives the process dying) and queues the line. A background
thread hands the queue over in batches every `flush_interval_s`, well inside the one-second
promise, to the worker's row writer process (billing/row_writer.py), which stores them
(billing/calls.py: COPY on PostgreSQL), then deletes the batch's spool file. If the database is
down, the batch is retried with its spool file kept. At start-up, spool files left by dead
processes (no lock held on them) are replayed; `request_id` is unique and rows already stored are
skipped, so a row is never written twice.
"""

import atexit
import fcntl
import logging
import os
import threading
import uuid
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
from django.db import connection

from .row_writer import RowWriter

logger = logging.getLogger("routerweb.recorder")

Row = dict[str, Any]

# Rows wait this long at most before their batch is inserted (plus the insert itself): inside the
# one-second promise, with batches large enough that their fixed costs (a transaction, a new spool
# file, the budgets' settling statements) are shared by many rows.
FLUSH_INTERVAL_S = 0.5


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, tuple):  # a NamedTuple (a budget Reservation): spooled as a list
        return list(value)
    raise TypeError(f"cannot spool {type(value).__name__}")


class CallRecorder:
    def __init__(
        self,
        spool_dir: Path,
        *,
        flush_interval_s: float = FLUSH_INTERVAL_S,
        insert: Callable[..., None] | None = None,
        upkeep: Callable[[], None] | None = None,
    ):
        self.spool_dir = spool_dir
        self.flush_interval_s = flush_interval_s
        self._row_writer = RowWriter() if insert is None else None
        # insert(lines, may_be_stored=...): store these spooled JSON lines, or raise (they are retried)
        self.insert = insert or self._row_writer.store
        self.upkeep = upkeep  # run after each flush, on the writer thread (the budgets' allowances)
        self._lock = threading.Lock()
        self._queue: list[bytes] = []  # the spooled lines of rows not handed over yet
        # Rows put back after a failed insert may have been stored anyway (a commit whose answer was
        # lost): their next insert must skip what is there. Fresh rows have new request ids.
        self._queue_has_retries = False
        self._retry_spools: list[tuple[int, Path]] = []  # (fd, path) of the spool files of those rows
        self._unwritten = 0  # recorded rows not yet in the database (queued or being inserted)
        self._wake = threading.Event()
        self._flushed = threading.Condition()
        self._thread: threading.Thread | None = None
        self._fd: int | None = None
        self._spool_path: Path | None = None
        self._stopping = False

    # ------------------------------------------------------------------ producer side (request path)

    def record(self, row: Row) -> None:
        line = orjson.dumps(row, default=_json_default, option=orjson.OPT_APPEND_NEWLINE)
        with self._lock:
            if self._thread is None:
                self._start_locked()
            os.write(self._fd, line)
            self._queue.append(line)
            self._unwritten += 1

    def flush(self, timeout_s: float = 10.0) -> None:
        """Block until everything recorded so far is in the database (for tests and shutdown)."""
        with self._flushed:
            self._wake.set()
            self._flushed.wait_for(lambda: not self._unwritten, timeout=timeout_s)

    def stop(self) -> None:
        """Flush and stop the writer thread; a later record() starts a new one."""
        thread = self._thread
        if thread is None:
            self._close_row_writer()
            return
        self._stopping = True
        self._wake.set()
        thread.join(timeout=10)
        with self._lock:
            self._thread, self._stopping = None, False
            if self._fd is not None and not self._queue:
                self._spool_path.unlink(missing_ok=True)
                os.close(self._fd)
                self._fd = self._spool_path = None
        self._close_row_writer()

    def _close_row_writer(self) -> None:
        if self._row_writer is not None:
            self._row_writer.close()

    # ------------------------------------------------------------------ writer side

    def start(self) -> None:
        """Start the writer thread (which first replays orphaned spools); idempotent."""
        with self._lock:
            if self._thread is None:
                self._start_locked()

    def _start_locked(self) -> None:
        self.spool_dir.mkdir(parents=True, exist_ok=True)
        self._open_spool()
        self._thread = threading.Thread(target=self._run, name="call-recorder", daemon=True)
        self._thread.start()
        atexit.register(self.stop)

    def _open_spool(self) -> None:
        path = self.spool_dir / f"calls-{os.getpid()}-{uuid.uuid4().hex[:8]}.jsonl"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # marks the file as owned by a live process
        self._fd, self._spool_path = fd, path

    def _run(self) -> None:
        try:
            try:
                if self._row_writer is not None:
                    self._row_writer.start()
                self.replay_orphans()
            except Exception:  # the database is down, say: the orphans wait for the next start-up
                logger.exception("could not start the row writer or replay orphaned spool files")
                connection.close()
            while True:
                self._wake.wait(self.flush_interval_s)
                self._wake.clear()
                self._flush_once()
                self._run_upkeep()
                if self._stopping:
                    self._flush_once()
                    return
        finally:
            connection.close()

    def _flush_once(self) -> None:
        with self._lock:
            if not self._queue:
                batch = []
            else:
                batch, self._queue = self._queue, []
                may_be_stored, self._queue_has_retries = self._queue_has_retries, False
                spools = [*self._retry_spools, (self._fd, self._spool_path)]
                self._retry_spools = []
                self._open_spool()
        if batch:
            try:
                self.insert(batch, may_be_stored=may_be_stored)
            except Exception:
                # The database or the row writer failed: put the rows back. Their spool files stay open,
                # so still locked: no other process replays them while this one retries.
                logger.exception("could not write %d call rows; will retry", len(batch))
                with self._lock:
                    self._queue[:0] = batch
                    self._queue_has_retries = True
                    self._retry_spools[:0] = spools
                return
            for fd, path in spools:
                # Removed while still locked: once closed, another process's replay could take it.
                path.unlink(missing_ok=True)
                os.close(fd)
            with self._lock:
                self._unwritten -= len(batch)
        with self._flushed:
            self._flushed.notify_all()

    def _run_upkeep(self) -> None:
        if self.upkeep is None:
            return
        try:
            self.upkeep()
        except Exception:
            logger.exception("budget upkeep failed; will retry")
            connection.close()

    def replay_orphans(self) -> int:
        """Insert the rows of spool files whose process has died; returns how many rows were replayed."""
        replayed = 0
        for path in sorted(self.spool_dir.glob("calls-*.jsonl")):
            if path == self._spool_path:
                continue
            try:
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)  # a live process owns it
                continue
            try:
                if os.fstat(fd).st_nlink == 0:
                    # Its owner stored its rows and removed it between our open and our lock.
                    continue
                lines = _spool_lines(fd, path.name)
                if lines:
                    self.insert(lines, may_be_stored=True)
                    replayed += len(lines)
                path.unlink(missing_ok=True)
            finally:
                os.close(fd)
        if replayed:
            logger.warning("replayed %d call rows from a previous process's spool", replayed)
        return replayed


def _spool_lines(fd: int, name: str) -> list[bytes]:
    with open(fd, "rb", closefd=False) as spool:
        data = spool.read()
    lines = []
    for line in data.splitlines():
        try:
            orjson.loads(line)
        except orjson.JSONDecodeError:
            # Only the last line can be torn, by a crash in the middle of its write.
            logger.warning("skipping a torn line in %s", name)
            continue
        lines.append(line)
    return lines


_recorder: CallRecorder | None = None
_recorder_lock = threading.Lock()


def call_recorder() -> CallRecorder:
    """This process's recorder (created on first use, never at import)."""
    global _recorder
    if _recorder is None:
        from django.conf import settings

        from .budgets import budget_upkeep

        with _recorder_lock:
            if _recorder is None:
                _recorder = CallRecorder(settings.ROUTERWEB_SPOOL_DIR, upkeep=budget_upkeep)
    return _recorder
