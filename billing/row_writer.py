"""A worker's row writer: a child process that stores the call rows its worker spools.

The worker's recorder thread sends each batch, as the JSON lines it already wrote to its spool, down
a pipe to this child process (billing/row_writer_process.py) and waits for the answer; the child
stores them with `spooled_lines_store` (billing/calls.py) in its own process, off the event loop's
GIL (why: docs/architecture.md, decisions).

The worker keeps a batch's spool file until the child answers that the batch is committed. If the
child fails or dies, `store()` raises, the recorder keeps the rows and retries (a new child is
started), and the retry skips rows that were stored after all. The child exits when the worker
closes the pipe, or dies.

Protocol: a request is `HEADER` (payload size, whether rows may be stored already) and the payload,
the JSON lines joined by newlines; the answer is `ANSWER` (size) and an error message, empty when
the rows are stored.
"""

import contextlib
import logging
import os
import select
import struct
import subprocess
import sys
import threading
from typing import BinaryIO

logger = logging.getLogger("routerweb.recorder")

HEADER = struct.Struct("!I?")
ANSWER = struct.Struct("!I")
DATABASE_NAME_ENV = "ROUTERWEB_ROW_WRITER_DATABASE_NAME"
CLOSE_TIMEOUT_S = 15.0
ANSWER_TIMEOUT_S = 120.0  # a batch not committed by then is given up and retried with a new child


class RowWriterError(Exception):
    """The batch was not stored (the child failed, died or could not start); retry it."""


class RowWriter:
    """The worker's side: `store(lines)` blocks until the child has committed them (or raises)."""

    def __init__(self) -> None:
        self._process: subprocess.Popen | None = None
        self._lock = threading.Lock()

    def store(self, lines: list[bytes], *, may_be_stored: bool) -> None:
        """`lines`: JSON lines, with or without their newline (empty lines are skipped)."""
        payload = b"\n".join(lines)
        with self._lock:
            process = self._running()
            try:
                process.stdin.write(HEADER.pack(len(payload), may_be_stored))
                process.stdin.write(payload)
                process.stdin.flush()
                if not select.select([process.stdout], [], [], ANSWER_TIMEOUT_S)[0]:
                    process.kill()  # stuck (a database that stopped answering): its batch is retried
                    raise EOFError(f"no answer within {ANSWER_TIMEOUT_S:g} s")
                (size,) = ANSWER.unpack(read_exactly(process.stdout, ANSWER.size))
                error = read_exactly(process.stdout, size).decode() if size else ""
            except (OSError, EOFError) as exc:  # the child died: its last batch may or may not be in
                self._close_locked()
                raise RowWriterError(f"the row writer process stopped ({exc or type(exc).__name__})") from exc
            except BaseException:
                # Interrupted mid-exchange: a later answer could be taken for another batch's.
                self._close_locked()
                raise
        if error:
            raise RowWriterError(error)

    def start(self) -> None:
        """Start the child ahead of the first batch (it takes a moment to load Django)."""
        with self._lock:
            self._running()

    def close(self) -> None:
        """Stop the child (it finishes the batch it holds, if any); the next `store()` starts another.

        A child stuck on a batch (a database lock, a dead connection) is killed instead: its batch
        stays in the spool and is replayed at the next start."""
        if not self._lock.acquire(timeout=CLOSE_TIMEOUT_S):
            process = self._process
            if process is not None:
                process.kill()
            return
        try:
            self._close_locked()
        finally:
            self._lock.release()

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def _running(self) -> subprocess.Popen:
        if self._process is None or self._process.poll() is not None:
            from django.conf import settings

            self._process = subprocess.Popen(
                [sys.executable, "-m", "billing.row_writer_process"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                cwd=settings.BASE_DIR,  # the project, whatever directory the server was started from
                env={**os.environ, **_child_environment()},
                # Its own session: a Ctrl-C or a signal to the server's group must not stop it before
                # the worker's last batch; it exits when the worker closes the pipe (or dies).
                start_new_session=True,
            )
        return self._process

    def _close_locked(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        for stream in (process.stdin, process.stdout):
            with contextlib.suppress(OSError):
                stream.close()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _child_environment() -> dict[str, str]:
    """The child reads the worker's settings, with the database the worker actually uses (a test
    run's database has another name than the one in DATABASE_URL)."""
    from django.conf import settings

    return {
        "DJANGO_SETTINGS_MODULE": os.environ.get("DJANGO_SETTINGS_MODULE", "routerweb.settings"),
        DATABASE_NAME_ENV: str(settings.DATABASES["default"]["NAME"]),
    }


def read_exactly(stream: BinaryIO, size: int) -> bytes:
    data = stream.read(size)
    if len(data) != size:
        raise EOFError("the pipe closed")
    return data
