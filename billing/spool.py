"""Spool files: call rows as JSON lines on local disk, written before they are stored.

A row is one line (`spool_line`), appended with one `write()`; `spool_chunks` reads whole lines back
in bounded chunks. billing/recorder.py owns the files' life cycle.
"""

import os
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson

CHUNK_BYTES = 4 << 20  # rows read back from a spool file at a time (backlog and replay)


def spool_line(row: dict[str, Any]) -> bytes:
    """A row as its spool line (JSON, newline-terminated): Decimals as strings, tuples as lists."""
    return orjson.dumps(row, default=_json_default, option=orjson.OPT_APPEND_NEWLINE)


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, tuple):  # a NamedTuple (a budget Reservation): spooled as a list
        return list(value)
    raise TypeError(f"cannot spool {type(value).__name__}")


def spool_chunks(fd: int, offset: int, *, final: bool = False) -> Iterator[tuple[list[bytes], int]]:
    """(lines, end offset) of the whole lines in the file from `offset`, about CHUNK_BYTES at a time.

    A last line without its newline is being written (a live spool: left for a later read) or was
    torn by a crash (`final`, a dead process's spool: given as it is, for the row writer to quarantine).
    """
    size = CHUNK_BYTES
    while True:
        data = os.pread(fd, size, offset)
        if not data:
            return
        at_end = len(data) < size
        cut = len(data) if at_end and final else data.rfind(b"\n") + 1
        if cut == 0:
            if at_end:
                return
            size *= 2  # a line longer than a chunk
            continue
        size = CHUNK_BYTES
        offset += cut
        lines = [line for line in data[:cut].split(b"\n") if line.strip()]
        if lines:
            yield lines, offset
        if at_end:
            return


def spool_remove(fd: int, path: Path) -> None:
    """Delete a spool file whose rows are stored, then close it: removed while still locked, since once
    closed another process's replay could take it."""
    path.unlink(missing_ok=True)
    os.close(fd)
