"""The console log handler that writes off the event loop (routerweb/log_format.py): every record
written, in order, at close; a bounded queue that drops (and says so) rather than grows."""

import io
import logging
import threading

from routerweb.log_format import BackgroundConsoleHandler


def _logger(handler: logging.Handler, name: str) -> logging.Logger:
    logger = logging.getLogger(name)
    logger.propagate = False
    logger.handlers = [handler]
    logger.setLevel(logging.INFO)
    return logger


def test_every_record_is_written_in_order_by_close():
    stream = io.StringIO()
    handler = BackgroundConsoleHandler(stream)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = _logger(handler, "test.console.order")
    for n in range(500):
        logger.info("line %d", n)
    handler.close()
    assert stream.getvalue().splitlines() == [f"line {n}" for n in range(500)]


class BlockedStream(io.StringIO):
    """stderr that does not take writes until released (a full pipe)."""

    def __init__(self) -> None:
        super().__init__()
        self.released = threading.Event()

    def write(self, text: str) -> int:
        self.released.wait(timeout=10)
        return super().write(text)


def test_a_blocked_stderr_drops_records_and_says_how_many():
    stream = BlockedStream()
    handler = BackgroundConsoleHandler(stream, queue_max=10)
    logger = _logger(handler, "test.console.blocked")
    for n in range(100):
        logger.info("line %d", n)  # never blocks the caller
    assert handler.dropped > 0
    stream.released.set()
    handler.close()
    text = stream.getvalue()
    assert "log records dropped (stderr could not keep up)" in text
    assert len([line for line in text.splitlines() if line.startswith("line ")]) < 100
