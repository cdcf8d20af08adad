"""One Redis connection per event loop, shared by every request on it, for the hot path.

Each request queues its commands and waits for its replies; what the requests of one turn of the event
loop queued goes out in one write, and Redis answers in order, so a busy worker's requests share the
system calls of one exchange, with no pool, no lock and no connection checkout. Replies are parsed by
hiredis (the parser redis-py itself uses). This is how routerweb talks to Redis on every call: the
registry version and the circuits (routing/shared_state.py), the rate limits' windows
(routing/rate_windows.py) and response cache lookups. Through redis-py's asyncio client the same
exchange cost about twice the CPU (a pool checkout, a health check and a timeout task or context for
the write and for each reply), and every request paid its own system calls (docs/benchmarks.md).

A request that gets no reply within `timeout_s` fails, and the connection is dropped (its later replies
would no longer match); a lost connection fails the requests waiting on it, and the next request opens
a new one. A request whose connection was lost before any of its replies came (an idle connection that
Redis closed, say by a restart, before the worker noticed) is retried once on a new one.
"""

import asyncio
import ssl
import weakref
from collections import deque
from collections.abc import Awaitable
from functools import cache

import hiredis
from redis.asyncio.connection import SSLConnection, UnixDomainSocketConnection, parse_url
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

_NOT_ENOUGH_DATA = object()  # what the parser returns while no complete reply is left (a reply may be False-ish)


class ConnectionLostUnanswered(RedisConnectionError):
    """The connection was lost before any reply to the request came back."""


class _Pipe(asyncio.Protocol):
    """The protocol of one connection: replies matched to the waiting requests in order."""

    def __init__(self, encoding: str | None, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._reader = hiredis.Reader(replyError=ResponseError, encoding=encoding, notEnoughData=_NOT_ENOUGH_DATA)
        self._waiting: deque[tuple[asyncio.Future, int]] = deque()  # each request's future and reply count
        self._read: list = []  # replies read, not yet handed to the first waiting request(s)
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self._outbox: list[bytes] = []

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        reader, waiting, read = self._reader, self._waiting, self._read
        reader.feed(data)
        read += iter(reader.gets, _NOT_ENOUGH_DATA)  # every complete reply, taken off the parser in C
        start, available = 0, len(read)
        while waiting and start + waiting[0][1] <= available:
            future, count = waiting.popleft()
            if not future.done():  # a request that timed out is gone; its replies are skipped
                future.set_result(read[start : start + count])
            start += count
        if start:
            del read[:start]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        partly_answered = bool(self._read)  # the first waiting request has some of its replies
        while self._waiting:
            future, _ = self._waiting.popleft()
            if not future.done():
                lost = RedisConnectionError if partly_answered else ConnectionLostUnanswered
                future.set_exception(lost(f"Redis closed the connection ({exc or 'end of stream'})"))
            partly_answered = False

    def request(self, packed: bytes, count: int) -> asyncio.Future:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._waiting.append((future, count))
        if not self._outbox:
            loop.call_soon(self._flush)
        self._outbox.append(packed)
        return future

    def _flush(self) -> None:
        """Send what the requests of one turn of the event loop wrote, in one write (one system call)."""
        outbox, self._outbox = self._outbox, []
        if not self.closed:
            self.transport.write(b"".join(outbox))

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()


class RedisPipe:
    """Redis at `url` (redis://, rediss://, unix://; user, password and db as redis-py reads them).

    `decode`: replies as str (utf-8), else bytes.
    """

    def __init__(self, url: str, *, decode: bool = True, timeout_s: float = 1.0) -> None:
        self.options = parse_url(url)
        self.encoding = "utf-8" if decode else None
        self.timeout_s = timeout_s
        self._pipes: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # loop → _Pipe or its opening
        self._latest: _Pipe | None = None  # the last pipe opened: a worker's one loop finds it without a lookup

    async def execute(self, *commands: tuple) -> list:
        """`commands` (of `resp_pack`'s argument types) in one write; their replies in order. An error
        reply raises redis-py's ResponseError once all replies are read; no reply in time, TimeoutError."""
        return await self.execute_packed(resp_pack(commands), len(commands))

    async def execute_packed(self, packed: bytes, count: int) -> list:
        """`execute` for `count` commands already packed (`resp_pack`)."""
        return await self._exchange(packed, count, None, None)

    def send_packed(self, packed: bytes, count: int) -> Awaitable[list]:
        """`execute_packed`, with the commands queued before this returns when the connection is open: they
        leave with the other commands of this turn of the event loop even if the replies are awaited
        later (so a caller can start another exchange first without a task for each). The result must
        be awaited."""
        pipe = self._latest
        if pipe is not None and not pipe.closed and pipe.loop is asyncio.get_running_loop():
            return self._exchange_sent(packed, count, pipe, pipe.request(packed, count))
        return self._exchange(packed, count, None, None)

    async def _exchange_sent(self, packed: bytes, count: int, pipe: _Pipe, sent: asyncio.Future) -> list:
        """`_exchange` of commands already sent; replies that came in while the caller awaited something
        else (the usual case: with the commands they left with) are taken as they are, with no deadline."""
        if not sent.done() or sent.cancelled() or sent.exception() is not None:
            return await self._exchange(packed, count, pipe, sent)
        return _checked(sent.result())

    async def _exchange(self, packed: bytes, count: int, pipe: _Pipe | None, sent: asyncio.Future | None) -> list:
        async with asyncio.timeout(self.timeout_s):
            if pipe is None or sent is None:  # not sent yet
                pipe = await self._pipe()
                sent = pipe.request(packed, count)
            try:
                replies = await self._replies(pipe, sent)
            except ConnectionLostUnanswered:
                pipe = await self._pipe()
                replies = await self._replies(pipe, pipe.request(packed, count))
        return _checked(replies)

    async def _replies(self, pipe: _Pipe, sent: asyncio.Future) -> list:
        try:
            return await sent
        except asyncio.CancelledError:
            pipe.close()  # its next replies would be this request's: nobody else may read them
            raise

    async def _pipe(self) -> _Pipe:
        loop = asyncio.get_running_loop()
        pipe = self._latest
        if pipe is not None and not pipe.closed and pipe.loop is loop:
            return pipe
        pipe = self._pipes.get(loop)
        if isinstance(pipe, _Pipe) and not pipe.closed:
            self._latest = pipe
            return pipe
        if not isinstance(pipe, asyncio.Future):
            pipe = self._pipes[loop] = loop.create_task(self._open())
        try:
            opened = await asyncio.shield(pipe)
        except BaseException:
            if self._pipes.get(loop) is pipe:
                del self._pipes[loop]
            raise
        self._pipes[loop] = self._latest = opened
        return opened

    async def _open(self) -> _Pipe:
        loop = asyncio.get_running_loop()
        options = self.options
        connection_class = options.get("connection_class")

        def protocol() -> _Pipe:
            return _Pipe(self.encoding, loop)

        if connection_class is UnixDomainSocketConnection:
            _, pipe = await loop.create_unix_connection(protocol, options["path"])
        else:
            tls = ssl.create_default_context() if connection_class is SSLConnection else None
            host, port = options.get("host", "localhost"), options.get("port", 6379)
            _, pipe = await loop.create_connection(protocol, host, port, ssl=tls)
        setup = []
        if options.get("password"):
            setup.append(("AUTH", *([options["username"]] if options.get("username") else []), options["password"]))
        if options.get("db"):
            setup.append(("SELECT", options["db"]))
        if setup:
            for reply in await pipe.request(resp_pack(tuple(setup)), len(setup)):
                if isinstance(reply, ResponseError):
                    pipe.close()
                    raise reply
        return pipe


def _checked(replies: list) -> list:
    """`replies`, or the first error reply among them raised (once all of them were read). hiredis makes
    each error reply an instance of exactly the `replyError` class it was given (ResponseError), so a
    look for that type (in C) finds them."""
    if ResponseError in map(type, replies):
        raise next(reply for reply in replies if type(reply) is ResponseError)
    return replies


def resp_pack(commands: tuple) -> bytes:
    """`commands` in the Redis protocol (RESP), for arguments of str, bytes, int or float: what
    redis-py's `pack_commands` does for them, at a fraction of its cost."""
    out = []
    for command in commands:
        out.append(b"*%d\r\n" % len(command))
        out.extend(resp_pack_argument(arg) for arg in command)
    return b"".join(out)


def resp_pack_argument(arg: str | bytes | int | float) -> bytes:
    if isinstance(arg, str):
        arg = arg.encode()
    elif not isinstance(arg, bytes):
        arg = repr(arg).encode()
    return b"$%d\r\n%s\r\n" % (len(arg), arg)


def redis_pipe(url: str, *, decode: bool = True, timeout_s: float = 1.0) -> RedisPipe:
    """The worker's pipe to `url`: one per URL and reply type, shared by everyone who asks for it, so
    that the commands of one call's parts (its circuits and its rate limits) can leave in one write."""
    return _shared_pipe(url, decode, timeout_s)  # positional: a default left out or spelt out is one pipe


@cache
def _shared_pipe(url: str, decode: bool, timeout_s: float) -> RedisPipe:
    return RedisPipe(url, decode=decode, timeout_s=timeout_s)
