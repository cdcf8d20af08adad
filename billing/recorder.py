"""Writing call rows off the request path: a durable local spool, then batched inserts.

`CallRecorder.record(row)` appends the row to this process's spool file as a JSON line (one
`write()`: once it returns, the row survives the process dying) and queues the line. A background
thread hands the queue over in batches every `flush_interval_s`, well inside the one-second
promise, to the worker's row writer process (billing/row_writer.py), which stores them
(billing/calls.py: COPY on PostgreSQL, bad rows quarantined), then deletes the batch's spool file.

When a batch cannot be stored (the database is down), the recorder switches to its backlog: the
failed batch's spool file becomes the one file every new row is appended to, rows stop being kept
in memory, and the thread drains the file from its start in bounded chunks, retrying with an
exponential backoff. However long the outage, the recorder holds one spool file open and a bounded
amount of memory; once the backlog is drained it goes back to rotating spool files.

At start-up, and again every `ORPHAN_SCAN_S`, spool files left by dead processes (no lock held on
them) are replayed, in chunks, file by file: one file that cannot be stored now is retried later
and does not stop the others. `request_id` is unique and rows already stored are skipped, so a row
is never written twice. The thread survives any error (logged, retried with backoff).
"""

import atexit
import fcntl
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from django.db import connection

from .row_writer import RowWriter
from .spool import spool_chunks, spool_line, spool_remove

logger = logging.getLogger("routerweb.recorder")

Row = dict[str, Any]

# Rows wait this long at most before their batch is inserted (plus the insert itself): inside the
# one-second promise, with batches large enough that their fixed costs (a transaction, a new spool
# file, the budgets' settling statements) are shared by many rows.
FLUSH_INTERVAL_S = 0.5
BACKOFF_MAX_S = 30.0  # the longest wait between two tries while the database refuses
ORPHAN_SCAN_S = 60.0  # how often dead processes' spool files are looked for after start-up
# Rows whose spool write failed (a full disk) wait in memory up to this many; beyond, they are
# dropped with an error logged for each batch of them.
UNSPOOLED_MAX = 100_000


class CallRecorder:
    def __init__(
        self,
        spool_dir: Path,
        *,
        flush_interval_s: float = FLUSH_INTERVAL_S,
        insert: Callable[..., None] | None = None,
        upkeep: Callable[[], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        backoff_max_s: float = BACKOFF_MAX_S,
    ):
        self.spool_dir = spool_dir
        self.flush_interval_s = flush_interval_s
        self.backoff_max_s = backoff_max_s
        self.clock = clock
        self._row_writer = RowWriter() if insert is None else None
        # insert(lines, may_be_stored=...): store these spooled JSON lines, or raise (they are retried)
        self.insert = insert or self._row_writer.store
        self.upkeep = upkeep  # run after each flush, on the writer thread (the budgets' allowances)
        self._lock = threading.Lock()
        self._queue: list[bytes] = []  # spooled lines of rows not handed over yet (not in backlog mode)
        self._unspooled: list[bytes] = []  # lines whose spool write failed: kept in memory only
        self._backlog: _Backlog | None = None  # set while stored rows wait on disk for the database
        self._unwritten = 0  # recorded rows not yet in the database (queued, in the backlog or being inserted)
        self._failures = 0  # consecutive failed tries: the backoff
        self._retry_at = 0.0
        self._orphans_due_at = 0.0
        self._wake = threading.Event()
        self._flushed = threading.Condition()
        self._thread: threading.Thread | None = None
        self._fd: int | None = None
        self._spool_path: Path | None = None
        self._stopping = False

    @property
    def row_writer_pid(self) -> int | None:
        """The row writer process's id while it runs; None before it starts, once stopped, or with `insert`."""
        return self._row_writer.pid if self._row_writer is not None else None

    # ------------------------------------------------------------------ producer side (request path)

    def record(self, row: Row) -> None:
        line = spool_line(row)
        with self._lock:
            if self._thread is None:
                self._start_locked()
            try:
                os.write(self._fd, line)
            except OSError as exc:
                self._keep_unspooled(line, exc)
            else:
                if self._backlog is None:
                    self._queue.append(line)
            self._unwritten += 1

    def flush(self, timeout_s: float = 10.0) -> None:
        """Block until everything recorded so far is in the database (for tests and shutdown)."""
        with self._flushed:
            self._retry_at = 0.0
            self._wake.set()
            self._flushed.wait_for(lambda: not self._unwritten, timeout=timeout_s)

    def stop(self) -> None:
        """Flush (one last try) and stop the writer thread; a later record() starts a new one.

        Rows still unstored stay in their spool file, unlocked, for the next start-up's replay."""
        thread = self._thread
        if thread is None:
            self._close_row_writer()
            return
        self._stopping = True
        self._wake.set()
        thread.join(timeout=10)
        with self._lock:
            self._thread, self._stopping = None, False
            if self._unspooled:
                logger.error("%d call rows could not be spooled nor stored: they are lost", len(self._unspooled))
                self._unspooled = []
            if self._fd is not None:
                if not self._queue and self._backlog is None:
                    self._spool_path.unlink(missing_ok=True)
                os.close(self._fd)
                self._fd = self._spool_path = self._backlog = None
                self._queue = []
        self._close_row_writer()

    @property
    def alive(self) -> bool:
        """Whether the writer thread runs (it is started by the first record() or by start())."""
        return self._thread is not None and self._thread.is_alive()

    @property
    def backlog_rows(self) -> int:
        """Rows recorded and not yet stored."""
        return self._unwritten

    def _close_row_writer(self) -> None:
        if self._row_writer is not None:
            self._row_writer.close()

    def _keep_unspooled(self, line: bytes, exc: OSError) -> None:
        if len(self._unspooled) < UNSPOOLED_MAX:
            if not self._unspooled:
                logger.error("could not spool a call row (%s); keeping rows in memory until it works", exc)
            self._unspooled.append(line)
        else:
            logger.error("could not spool a call row (%s) and %d wait in memory: the row is lost", exc, UNSPOOLED_MAX)
            self._unwritten -= 1

    # ------------------------------------------------------------------ writer side

    def start(self) -> None:
        """Start the writer thread (which first replays orphaned spools); idempotent."""
        with self._lock:
            if self._thread is None:
                self._start_locked()

    def _start_locked(self) -> None:
        self.spool_dir.mkdir(parents=True, exist_ok=True)
        self._open_spool()
        self._orphans_due_at = 0.0
        self._thread = threading.Thread(target=self._run, name="call-recorder", daemon=True)
        self._thread.start()
        atexit.register(self.stop)

    def _open_spool(self) -> None:
        path = self.spool_dir / f"calls-{os.getpid()}-{uuid.uuid4().hex[:8]}.jsonl"
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # marks the file as owned by a live process
        self._fd, self._spool_path = fd, path

    def _run(self) -> None:
        try:
            if self._row_writer is not None:
                try:
                    self._row_writer.start()
                except Exception:  # store() starts it again when it is needed
                    logger.exception("could not start the row writer process")
            self._guarded(self._replay_orphans_due)
            while True:
                self._wake.wait(self.flush_interval_s)
                self._wake.clear()
                stopping = self._stopping
                self._guarded(self._store_due, force=stopping)
                self._guarded(self._replay_orphans_due)
                self._run_upkeep()
                if stopping:
                    return
        except BaseException:
            logger.critical("the call recorder's thread stopped; rows stay spooled for replay", exc_info=True)
            raise
        finally:
            connection.close()

    def _guarded(self, step: Callable[..., object], **kwargs: Any) -> None:
        """Run one step of the writer thread: an error is logged and retried later (backoff), never raised."""
        try:
            step(**kwargs)
        except Exception:
            logger.exception("the call recorder failed; will retry")
            self._note_failure()
            connection.close()

    def _store_due(self, *, force: bool) -> None:
        if force or self.clock() >= self._retry_at:
            self.store_pending()

    def _replay_orphans_due(self) -> None:
        if self.clock() >= self._orphans_due_at:
            self._orphans_due_at = self.clock() + ORPHAN_SCAN_S
            self.replay_orphans()

    def store_pending(self) -> bool:
        """Store what is queued, or drain the backlog; True when nothing recorded is left unstored.

        Raises nothing for a failed insert: the rows stay spooled and the next try waits (backoff).
        """
        try:
            stored = self._store_unspooled() and (
                self._drain_backlog() if self._backlog is not None else self._store_queue()
            )
        finally:
            with self._flushed:
                self._flushed.notify_all()
        if stored:
            self._failures, self._retry_at = 0, 0.0
        return stored

    def _store_queue(self) -> bool:
        with self._lock:
            if not self._queue:
                return True
            batch, self._queue = self._queue, []
            spool = (self._fd, self._spool_path)
            self._open_spool()
        try:
            self.insert(batch, may_be_stored=False)
        except Exception:
            logger.exception("could not store %d call rows; they wait in the spool", len(batch))
            self._to_backlog(spool)
            self._note_failure()
            return False
        spool_remove(*spool)
        with self._lock:
            self._unwritten -= len(batch)
        return True

    def _to_backlog(self, spool: tuple[int, Path]) -> None:
        """Make the failed batch's spool file the backlog: the rows recorded since its rotation move
        into it, and every new row is appended to it, with nothing kept in memory."""
        with self._lock:
            fd, path = spool
            for line in self._queue:
                try:
                    os.write(fd, line)
                except OSError as exc:
                    self._keep_unspooled(line, exc)
            self._queue = []
            spool_remove(self._fd, self._spool_path)
            self._fd, self._spool_path = fd, path
            self._backlog = _Backlog(fd, path)

    def _drain_backlog(self) -> bool:
        backlog = self._backlog
        for lines, end in spool_chunks(backlog.fd, backlog.offset):
            try:
                self.insert(lines, may_be_stored=True)  # a chunk tried before may have been stored
            except Exception:
                logger.warning("could not store the %d call rows waiting in the spool; will retry", self._unwritten)
                self._note_failure()
                return False
            backlog.offset = end
            with self._lock:
                self._unwritten -= len(lines)
        with self._lock:
            if os.fstat(backlog.fd).st_size != backlog.offset:
                return False  # rows arrived meanwhile: drained on the next turn, without waiting
            self._open_spool()
            self._backlog = None
        spool_remove(backlog.fd, backlog.path)
        logger.warning("the call rows that waited in the spool are stored")
        return True

    def _store_unspooled(self) -> bool:
        with self._lock:
            lines, self._unspooled = self._unspooled, []
        if not lines:
            return True
        try:
            self.insert(lines, may_be_stored=False)
        except Exception:
            with self._lock:
                self._unspooled[:0] = lines
            self._note_failure()
            return False
        with self._lock:
            self._unwritten -= len(lines)
        return True

    def _note_failure(self) -> None:
        self._failures += 1
        delay = min(self.backoff_max_s, self.flush_interval_s * 2 ** min(self._failures, 16))
        self._retry_at = self.clock() + delay

    def _run_upkeep(self) -> None:
        if self.upkeep is None:
            return
        try:
            self.upkeep()
        except Exception:
            logger.exception("upkeep (budgets, body retention) failed; will retry")
            connection.close()

    def replay_orphans(self) -> int:
        """Store the rows of spool files whose process has died; returns how many rows were handed on.

        A file whose rows cannot be stored now is left for the next scan; the others are still replayed.
        """
        replayed = 0
        for path in sorted(self.spool_dir.glob("calls-*.jsonl")):
            if path == self._spool_path:
                continue
            try:
                replayed += self._replay(path)
            except Exception:
                logger.exception("could not replay %s; will retry", path.name)
                self._orphans_due_at = min(self._orphans_due_at, self.clock() + self.backoff_max_s)
        if replayed:
            logger.warning("replayed %d call rows from a previous process's spool", replayed)
        return replayed

    def _replay(self, path: Path) -> int:
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return 0
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return 0  # a live process owns it
            if os.fstat(fd).st_nlink == 0:
                return 0  # its owner stored its rows and removed it between our open and our lock
            replayed = 0
            for lines, _ in spool_chunks(fd, 0, final=True):
                self.insert(lines, may_be_stored=True)
                replayed += len(lines)
            path.unlink(missing_ok=True)
            return replayed
        finally:
            os.close(fd)


class _Backlog:
    """The spool file that rows wait in while the database refuses them, stored from `offset` on."""

    def __init__(self, fd: int, path: Path):
        self.fd, self.path, self.offset = fd, path, 0


_recorder: CallRecorder | None = None
_recorder_lock = threading.Lock()


def call_recorder() -> CallRecorder:
    """This process's recorder (created on first use, never at import)."""
    global _recorder
    if _recorder is None:
        from django.conf import settings

        from .body_retention import BodyRetention, upkeep_chain
        from .budget_upkeep import budget_upkeep

        with _recorder_lock:
            if _recorder is None:
                upkeep = upkeep_chain(budget_upkeep, BodyRetention())
                _recorder = CallRecorder(settings.ROUTERWEB_SPOOL_DIR, upkeep=upkeep)
    return _recorder
