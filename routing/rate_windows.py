"""The rate limits' counters: the `limits` library's sliding window counter, hit for all of a call's
limits at once.

A sliding window counter is two fixed one-minute counters, the current minute's and the previous one's;
a limit's count is the current counter plus the previous one weighted by how much of its minute is still
inside the sliding window. `hit` takes a call's cost on each limit it fits and returns every window's
state after that (for the x-ratelimit-* headers and Retry-After), so admitting a call is one exchange:

- `RedisWindows`: the library's own acquire script (`acquire_sliding_window.lua`, atomic on the Redis
  server, so workers and machines share the counters without a race) for every limit of the call, and
  the windows read back as the library's `sliding_window.lua` reads them, with plain commands (a Lua
  call costs Redis five times their CPU): one MGET of every counter, and each current counter's PTTL.
  A previous counter's time left is not read: the scripts make a previous counter only by renaming
  the current one as its minute ends, and give the new current counter a window more, so a previous
  counter always expires exactly WINDOW_MS before its current one. Keys are exactly as the library's
  `RedisStorage` names them, and all of it goes in one pipelined write on routerweb's lean Redis
  connection (routing/redis_pipe.py). Through the library's storage this took four round trips per
  call through redis-py's client (docs/benchmarks.md).
- `MemoryWindows`: the same counter in the worker's memory, for one worker (see its docstring for why
  not the library's MemoryStorage).
"""

import time
from collections.abc import Awaitable, Callable
from hashlib import sha1
from typing import NamedTuple, Protocol

from limits.aio.storage.redis.bridge import RedisBridge
from redis.exceptions import ResponseError

from .redis_pipe import RedisPipe, resp_pack, resp_pack_argument

WINDOW_S = 60
WINDOW_MS = WINDOW_S * 1000


class WindowState(NamedTuple):
    """A limit's sliding window after a hit: whether the hit was taken, the two counters with the
    milliseconds each has left (the previous one's weight is its time left over WINDOW_MS), and what
    the headers show, computed once (`window_state`). A named tuple: two are made for every limited
    call."""

    acquired: bool
    previous: int
    previous_ttl_ms: float
    current: int
    current_ttl_ms: float
    used: int  # the weighted count: previous × previous_ttl_ms / WINDOW_MS + current, rounded down
    reset_ms: int  # until the window frees up again: the library's `get_window_stats` reset time

    def reset_in(self) -> float:
        return self.reset_ms / 1000


def window_state(
    acquired: bool, previous: int, previous_ttl_ms: float, current: int, current_ttl_ms: float
) -> WindowState:
    """The window's state from its counters, weighed and with its reset time as the library computes them
    (two are made for every limited call: comparisons rather than calls to min and max)."""
    if previous:
        reset = previous_ttl_ms % (WINDOW_MS / previous)
        if current:
            current_reset = current_ttl_ms % WINDOW_MS
            if current_reset < reset:
                reset = current_reset
    elif current:
        reset = current_ttl_ms % WINDOW_MS
    else:
        reset = 0
    used = int(previous * previous_ttl_ms // WINDOW_MS) + current
    # tuple.__new__ directly: the named tuple's own __new__ is a Python function
    return _tuple_new(WindowState, (acquired, previous, previous_ttl_ms, current, current_ttl_ms, used, round(reset)))


_tuple_new = tuple.__new__


class LimitsToHit(Protocol):
    """A call's limits, as `hit` takes them (routing/ratelimit.py's LimitSet): in order, each limit's
    storage key, its amount per minute, and whether it counts tokens (else requests)."""

    keys: list[str]
    amounts: list[int]
    counts_tokens: list[bool]


class SlidingWindows(Protocol):
    concurrent: bool  # its calls do I/O (worth overlapping)

    def hit(self, limits: LimitsToHit, tokens: int) -> Awaitable[list[WindowState]]:
        """Take 1 on each requests limit and `tokens` on each tokens limit where it fits; every window's
        state after that, in order. Storage commands are sent before this returns (with the other
        commands of this turn of the event loop); the result must be awaited."""
        raise NotImplementedError

    async def add(self, key: str, amount: int) -> None:
        """Add `amount` to the window's current counter; a negative amount gives back, never below 0."""
        raise NotImplementedError


class MemoryWindows:
    """The sliding window counter in this worker's memory: per limit, the current and the previous
    minute's counts, weighted as the library weighs them (`limits.storage.MemoryStorage`'s
    `_get_sliding_window_info`).

    Not the library's MemoryStorage itself: its `incr` starts a timer thread to expire keys whenever
    none is running, and a thread lives 10 ms, so a busy worker started up to a hundred threads a
    second (half the cost of a limited call, docs/benchmarks.md). Here a limit's counts move to the
    next minute when it is next hit, and limits not hit for two minutes are dropped once there are
    many. One event loop, no await inside: no other call can come between a read and a hit.
    """

    concurrent = False
    KEPT = 100_000  # limits whose counts are kept before idle ones are dropped

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._counts: dict[str, list[int]] = {}  # key → [minute, its count, the previous minute's count]

    async def hit(self, limits: LimitsToHit, tokens: int) -> list[WindowState]:
        now = self.clock()
        return [
            self._hit(key, amount, tokens if counts_tokens else 1, now)
            for key, amount, counts_tokens in zip(limits.keys, limits.amounts, limits.counts_tokens, strict=True)
        ]

    def _hit(self, key: str, amount: int, cost: int, now: float) -> WindowState:
        counts = self._minute(key, now)
        _, current, previous = counts
        elapsed_ms = now % WINDOW_S * 1000
        previous_ttl_ms = WINDOW_MS - elapsed_ms if previous else 0.0
        acquired = cost <= amount and int(previous * previous_ttl_ms // WINDOW_MS) + current + cost <= amount
        if acquired:
            counts[1] = current = current + cost
        return window_state(acquired, previous, previous_ttl_ms, current, 2 * WINDOW_MS - elapsed_ms)

    async def add(self, key: str, amount: int) -> None:
        counts = self._minute(key, self.clock())
        counts[1] = max(0, counts[1] + amount)

    def _minute(self, key: str, now: float) -> list[int]:
        minute = int(now // WINDOW_S)
        counts = self._counts.get(key)
        if counts is None:
            if len(self._counts) >= self.KEPT:
                self._counts = {k: c for k, c in self._counts.items() if c[0] >= minute - 1}
            counts = self._counts[key] = [minute, 0, 0]
        elif counts[0] != minute:
            counts[2] = counts[1] if counts[0] == minute - 1 else 0
            counts[0], counts[1] = minute, 0
        return counts


class _Script:
    def __init__(self, source: bytes):
        self.source = source
        self.sha = sha1(source).hexdigest()


ACQUIRE = _Script(RedisBridge.SCRIPT_ACQUIRE_SLIDING_WINDOW)
EXCHANGES_KEPT = 10_000  # limit sets whose packed exchange is kept (a few hundred bytes each)


class _Exchange(NamedTuple):
    """A limit set's exchange in the Redis protocol, packed once: every limit's acquire script call, then
    the windows' read. Only the tokens limits' cost changes from call to call, so the exchange is kept
    as the pieces around it: the packed cost joins them (`bytes.join`, one C call per call)."""

    pieces: list[bytes]
    commands: int
    limits: int


class RedisWindows:
    concurrent = True

    def __init__(self, redis: RedisPipe, *, key_prefix: str) -> None:
        self.redis = redis
        self.key_prefix = key_prefix
        self._exchanges: dict[LimitsToHit, _Exchange] = {}  # by the limit set itself (identity)

    def _keys(self, key: str) -> tuple[str, str]:
        """The previous and current window's keys, as the library's RedisStorage names them."""
        current = f"{self.key_prefix}:{{{key}}}"
        return f"{current}/-1", current

    def hit(self, limits: LimitsToHit, tokens: int) -> Awaitable[list[WindowState]]:
        exchange = self._exchanges.get(limits) or self._exchange_pack(limits)
        packed = resp_pack_argument(tokens).join(exchange.pieces)
        return self._hit_replies(self.redis.send_packed(packed, exchange.commands), packed, exchange)

    async def _hit_replies(self, sent: Awaitable[list], packed: bytes, exchange: _Exchange) -> list[WindowState]:
        try:
            replies = await sent
        except ResponseError as error:
            if not str(error).startswith("NOSCRIPT"):
                raise
            # A Redis that has not seen the script yet (new, restarted or flushed).
            await self.redis.execute(("SCRIPT", "LOAD", ACQUIRE.source))
            replies = await self.redis.execute_packed(packed, exchange.commands)
        # each limit's acquire reply, the MGET's counters (previous and current for each limit), each PTTL
        limits = exchange.limits
        counters = replies[limits]
        return list(map(_window_state, replies[:limits], counters[0::2], counters[1::2], replies[limits + 1 :]))

    def _exchange_pack(self, limits: LimitsToHit) -> _Exchange:
        """The acquire script's call for each limit (a requests limit's cost, 1, packed in; a tokens
        limit's cost left as a gap between two pieces), then the windows' read."""
        pieces, packed = [], b""
        keys = [self._keys(key) for key in limits.keys]
        for (previous_key, current_key), amount, counts_tokens in zip(
            keys, limits.amounts, limits.counts_tokens, strict=True
        ):
            acquire = ("EVALSHA", ACQUIRE.sha, 2, previous_key, current_key, amount, WINDOW_S)
            packed += resp_pack(((*acquire, 1),))[: -len(resp_pack_argument(1))]
            if counts_tokens:
                pieces.append(packed)
                packed = b""
            else:
                packed += resp_pack_argument(1)
        pieces.append(packed + resp_pack(windows_read(keys)))
        if len(self._exchanges) >= EXCHANGES_KEPT:
            self._exchanges.clear()
        exchange = self._exchanges[limits] = _Exchange(pieces, 2 * len(keys) + 1, len(keys))
        return exchange

    async def add(self, key: str, amount: int) -> None:
        current_key = self._keys(key)[1]
        if amount > 0:
            # a new counter gets the library's expiry in the same write, so none is ever left without one
            new_counter = ("SET", current_key, 0, "PX", 2 * WINDOW_MS, "NX")
            await self.redis.execute(new_counter, ("INCRBY", current_key, amount))
        elif amount < 0:
            (value,) = await self.redis.execute(("GET", current_key))
            taken = min(-amount, int(value or 0))
            if taken:
                await self.redis.execute(("DECRBY", current_key, taken))


def windows_read(keys: list[tuple[str, str]]) -> tuple[tuple, ...]:
    """The commands that read the windows of `keys` (each limit's previous and current counter's keys):
    one MGET of every counter, then each current counter's PTTL."""
    counters = [counter for pair in keys for counter in pair]
    return (("MGET", *counters), *(("PTTL", current_key) for _, current_key in keys))


def _window_state(acquired, previous: str | None, current: str | None, current_ttl_ms: int) -> WindowState:
    """A window's state from its two counters (strings; None for a missing one) and the current one's time
    left (milliseconds; PTTL's -2 and -1 for a missing counter or one without expiry count as 0), read as
    the library's `sliding_window.lua` reads them: the previous counter has WINDOW_MS less left than the
    current one (see the module docstring), and a current counter with less than a window left belongs
    to a minute that has ended, so it is the previous counter (the script renames it so; the next
    acquire does that here)."""
    previous = int(previous) if previous else 0
    current = int(current) if current else 0
    if current_ttl_ms >= WINDOW_MS:  # PTTL's replies are integers
        previous_ttl_ms = current_ttl_ms - WINDOW_MS
    elif current_ttl_ms > 0:
        previous, previous_ttl_ms, current, current_ttl_ms = current, current_ttl_ms, 0, current_ttl_ms + WINDOW_MS
    else:
        previous_ttl_ms = current_ttl_ms = 0
    # the acquire script answers true (1) or false (nil)
    return window_state(acquired == 1, previous, previous_ttl_ms, current, current_ttl_ms)
