"""The row writer's child process (billing/row_writer.py starts it): stores the batches its worker sends.

Run as `python -m billing.row_writer_process`; it reads requests from stdin and answers on the
original stdout until the worker closes the pipe, or dies.
"""

import logging
import os
import sys

from billing.row_writer import ANSWER, DATABASE_NAME_ENV, HEADER, read_exactly

logger = logging.getLogger("routerweb.recorder")


def main() -> None:
    """Store batches from stdin until it closes; answer each on the original stdout."""
    answers = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # anything else printed goes to stderr, never into the answers
    import django
    from django.conf import settings

    database = settings.DATABASES["default"]
    if os.environ.get(DATABASE_NAME_ENV):
        database["NAME"] = os.environ[DATABASE_NAME_ENV]
    database.get("OPTIONS", {}).pop("pool", None)  # one thread, one connection
    django.setup()
    from django.db import connection

    from billing.calls import spooled_lines_store

    requests = sys.stdin.buffer
    while True:
        try:
            size, may_be_stored = HEADER.unpack(read_exactly(requests, HEADER.size))
            payload = read_exactly(requests, size)
        except EOFError:
            return  # the worker closed the pipe, or died
        lines = [line for line in payload.split(b"\n") if line]
        try:
            spooled_lines_store(lines, may_be_stored=may_be_stored)
            error = b""
        except Exception as exc:
            logger.exception("could not store %d call rows", len(lines))
            connection.close()  # a broken connection is replaced on the next batch
            error = f"{type(exc).__name__}: {exc}".encode()
        answers.write(ANSWER.pack(len(error)) + error)
        answers.flush()


if __name__ == "__main__":
    main()
