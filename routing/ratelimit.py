"""Rate limits: requests and tokens per minute, per API key and per user, shared by every worker.

Limits come from the registry snapshot (an API key's own, else `ROUTERWEB_KEY_RPM`/`_TPM`; a user's
`UserRateLimit`), so deciding which apply reads no database; a call with none costs a dict lookup.
Counting is the `limits` library's sliding window counter (routing/rate_windows.py: its Lua scripts
on Redis, its memory storage otherwise), on storage keys computed once per limit: on Redis
(`REDIS_URL`) one counter per limit for every worker and machine, else in the worker's memory.

A call is admitted by hitting each limit that applies: 1 request, and for tokens the prompt bound
(the body's bytes: a provider's token is at least one byte of UTF-8) plus the completion cap (the
request's `max_tokens`, else the first candidate's `max_output_tokens`, else 4096, times `n`). When
one refuses, the hits the others took are given back and the call gets `429 rate_limit_exceeded`
naming the limit. A call's limits are hit, and their windows read for the headers, in one exchange
(one round trip on Redis).
After the call, `correct_soon` replaces the tokens counted by the call's real usage.

The counters failing (Redis down or slow) never refuses a call: it is served without limits, a
warning is logged at most once a minute, `failures` counts them, and the counters are left alone for
a second before they are tried again.
"""

import asyncio
import logging
import math
import operator
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from django.conf import settings
from limits import RateLimitItemPerMinute

from .embedding_request import EmbeddingRequest
from .errors import ApiError
from .rate_windows import MemoryWindows, RedisWindows, SlidingWindows, WindowState, window_state
from .redis_pipe import redis_pipe
from .schemas import ChatRequest
from .shared_state import REDIS_TIMEOUT_S
from .snapshot import KeySnap, ModelSnap, Registry

logger = logging.getLogger("routerweb.ratelimit")

DEFAULT_COMPLETION_CAP = 4096
RETRY_STORAGE_AFTER_S = 1.0
WARN_EVERY_S = 60.0
KINDS = ("requests", "tokens")
_acquired = operator.itemgetter(0)  # a WindowState's `acquired`, read in C
HEADER_NAMES = {kind: tuple(f"x-ratelimit-{part}-{kind}" for part in ("limit", "remaining", "reset")) for kind in KINDS}
CORRECT_EVERY_S = 0.1


@dataclass(frozen=True, slots=True)
class Limit:
    kind: str  # "requests" or "tokens"
    amount: int  # per minute
    scope: str  # "key" or "user"
    ident: int
    key: str = field(init=False, compare=False)  # the limits library's storage key, computed once

    def __post_init__(self) -> None:
        key = RateLimitItemPerMinute(self.amount, namespace="rw").key_for(self.scope, str(self.ident), self.kind)
        object.__setattr__(self, "key", key)

    def describe(self) -> str:
        owner = "this API key" if self.scope == "key" else "your user"
        return f"{self.amount} {self.kind} per minute of {owner}"


class LimitSet:
    """The limits that apply to a call, with what admitting it needs worked out once (`limits_for`
    remembers a key's and user's set per registry snapshot): each limit's storage key and amount, and
    which of them count tokens."""

    __slots__ = ("limits", "keys", "amounts", "amount_texts", "counts_tokens", "token_limits", "header_groups")

    def __init__(self, limits: tuple[Limit, ...]) -> None:
        self.limits = limits
        self.keys = [limit.key for limit in limits]
        self.amounts = [limit.amount for limit in limits]
        self.amount_texts = [str(limit.amount) for limit in limits]
        self.counts_tokens = [limit.kind == "tokens" for limit in limits]
        self.token_limits = tuple(limit for limit in limits if limit.kind == "tokens")
        # Per kind, its three header names and the positions of its limits (the headers show the one with
        # least left)
        self.header_groups = tuple(
            (*HEADER_NAMES[kind], tuple(i for i, limit in enumerate(limits) if limit.kind == kind))
            for kind in KINDS
            if any(limit.kind == kind for limit in limits)
        )

    def costs(self, tokens: int) -> list[int]:
        """What a call bounded at `tokens` costs each limit: 1 request, or its tokens."""
        return [tokens if counts_tokens else 1 for counts_tokens in self.counts_tokens]


@dataclass(frozen=True, eq=False)
class RateLimitExceeded(ApiError):
    """A 429 in OpenAI's shape; `headers` carry Retry-After and the x-ratelimit-* headers."""

    headers: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class Admission:
    """What admitting a call counted: 1 on each requests limit of `limits`, `tokens` on each tokens limit."""

    tokens: int
    limits: LimitSet
    headers: dict[str, str]


def tokens_bound(chat: ChatRequest | EmbeddingRequest, candidates: list[ModelSnap]) -> int:
    """The most tokens the call can use: prompt bound plus completion cap (see the module docstring; an
    embedding's cap is 0)."""
    cap = chat.max_tokens
    if cap is None:
        cap = (candidates[0].max_output_tokens if candidates else None) or DEFAULT_COMPLETION_CAP
    return chat.body_size + cap * chat.choices


class RateLimiter:
    """A worker's rate limiter over `windows` (routing/rate_windows.py: Redis or this worker's memory)."""

    def __init__(
        self,
        windows: SlidingWindows,
        *,
        key_rpm: int = 0,
        key_tpm: int = 0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.windows = windows
        self.key_defaults = (key_rpm or None, key_tpm or None)
        self.clock = clock
        self.failures = 0  # calls served without limits because the counters failed
        self._down_until = 0.0
        self._warned_at = -math.inf
        self._corrections: set[asyncio.Task] = set()
        self._pending: dict[str, int] = {}  # tokens to add (negative: give back) per limit's storage key
        self._flush_scheduled = False
        self._limits: dict[tuple[int, int | None], LimitSet | None] = {}  # of `_limits_registry`
        self._limits_registry: Registry | None = None

    def limits_for(self, registry: Registry, *, key: KeySnap | None, user_id: int | None) -> LimitSet | None:
        """The limits that apply to a call by `key` (None: the playground) and `user_id`, None if none;
        remembered per registry snapshot, so a call usually costs one dict lookup here."""
        if registry is not self._limits_registry:
            self._limits, self._limits_registry = {}, registry
        cache_key = (key.id if key is not None else 0, user_id)
        try:
            return self._limits[cache_key]
        except KeyError:
            found = self._limits_find(registry, key=key, user_id=user_id)
            limits = self._limits[cache_key] = LimitSet(found) if found else None
            return limits

    def _limits_find(self, registry: Registry, *, key: KeySnap | None, user_id: int | None) -> tuple[Limit, ...]:
        found: list[Limit] = []
        if key is not None:
            rpm = key.rpm_limit if key.rpm_limit is not None else self.key_defaults[0]
            tpm = key.tpm_limit if key.tpm_limit is not None else self.key_defaults[1]
            if rpm:
                found.append(Limit("requests", rpm, "key", key.id))
            if tpm:
                found.append(Limit("tokens", tpm, "key", key.id))
        user = registry.user_limits.get(user_id) if user_id is not None else None
        if user is not None:
            for kind, amount in zip(KINDS, user, strict=True):
                if amount:
                    found.append(Limit(kind, amount, "user", user_id))
        return tuple(found)

    def admit(self, limits: LimitSet, *, tokens: int) -> Awaitable[Admission | None]:
        """Count a call against `limits`: the counters' commands are sent before this returns (with this
        turn's other Redis commands: routing/admission.py); awaited, raises RateLimitExceeded, or
        returns None when the counters failed (the call is served unlimited)."""
        if self.clock() < self._down_until:
            return self._unlimited()
        try:
            hitting = self.windows.hit(limits, tokens)
        except Exception as error:  # the counters' storage failed: serve the call (fail open)
            self._storage_failed(error)
            return self._unlimited()
        return self._admitted(limits, tokens, hitting)

    async def _unlimited(self) -> None:
        self.failures += 1

    async def _admitted(self, limits: LimitSet, tokens: int, hitting: Awaitable[list[WindowState]]) -> Admission | None:
        try:
            windows = await hitting
            refused = None
            if not all(map(_acquired, windows)):
                refused = next(index for index, window in enumerate(windows) if not window.acquired)
                costs = limits.costs(tokens)
                windows = [
                    await self._give_back(limit, cost, window)
                    for limit, cost, window in zip(limits.limits, costs, windows, strict=True)
                ]
        except Exception as error:  # the counters' storage failed: serve the call (fail open)
            self._storage_failed(error)
            return None
        headers = _headers(limits, windows)
        if refused is not None:
            raise _exceeded(limits.limits[refused], costs[refused], windows[refused], headers)
        return Admission(tokens=tokens, limits=limits, headers=headers)

    async def _give_back(self, limit: Limit, cost: int, window: WindowState) -> WindowState:
        """Undo a hit that a refused call took; the window's state without it."""
        if not window.acquired:
            return window
        await self.windows.add(limit.key, -cost)
        current = max(0, window.current - cost)
        return window_state(False, window.previous, window.previous_ttl_ms, current, window.current_ttl_ms)

    def correct_soon(self, admission: Admission, *, tokens: int | None) -> None:
        """Replace the tokens counted at admission by `tokens`, the call's real usage, off the request path
        (from synchronous code on the event loop): the corrections of all calls are summed per limit and
        applied together every CORRECT_EVERY_S, so a busy worker spends a few storage calls per interval
        on them, not two per call. `tokens` None: the call's usage is unknown (estimated), the bound
        counted at admission stays."""
        if tokens is None or tokens == admission.tokens:
            return
        for limit in admission.limits.token_limits:
            self._pending[limit.key] = self._pending.get(limit.key, 0) + tokens - admission.tokens
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_later(CORRECT_EVERY_S, self._flush)

    async def give_back(self, admission: Admission) -> None:
        """Undo an admission (a call that starts over, with the registry it missed), before it is admitted
        again: left to the next corrections, both would count for up to CORRECT_EVERY_S."""
        limits = admission.limits
        await self._apply({key: -cost for key, cost in zip(limits.keys, limits.costs(admission.tokens), strict=True)})

    @property
    def overlaps(self) -> bool:
        """Whether admitting does I/O worth sending together with the call's other reads (Redis)."""
        return self.windows.concurrent

    def _flush(self) -> None:
        self._flush_scheduled = False
        pending, self._pending = self._pending, {}
        task = asyncio.get_running_loop().create_task(self._apply(pending))
        self._corrections.add(task)
        task.add_done_callback(self._corrections.discard)

    async def _apply(self, pending: dict[str, int]) -> None:
        if self.clock() < self._down_until:
            return
        try:
            for key, delta in pending.items():
                if delta:
                    await self.windows.add(key, delta)
        except Exception as error:
            self._storage_failed(error)

    @property
    def settled(self) -> bool:
        """No correction is waiting or being applied (for tests)."""
        return not self._pending and not self._corrections

    def _storage_failed(self, error: Exception) -> None:
        self.failures += 1
        now = self.clock()
        self._down_until = now + RETRY_STORAGE_AFTER_S
        if now - self._warned_at >= WARN_EVERY_S:
            self._warned_at = now
            logger.warning("rate limit counters unavailable (%s); serving calls without rate limits", error)


def _exceeded(limit: Limit, cost: int, window: WindowState, headers: dict[str, str]) -> RateLimitExceeded:
    retry_after = max(1, math.ceil(window.reset_in()))
    if cost > limit.amount:
        message = f"Rate limit exceeded: this request may use {cost} tokens, more than {limit.describe()}."
    else:
        message = f"Rate limit exceeded: {limit.describe()}. Try again in {retry_after}s."
    return RateLimitExceeded(
        429, message, code="rate_limit_exceeded", headers={**headers, "Retry-After": str(retry_after)}
    )


def _headers(limits: LimitSet, windows: list[WindowState]) -> dict[str, str]:
    """OpenAI's x-ratelimit-* headers: for each kind, the limit with the least left."""
    headers: dict[str, str] = {}
    amounts = limits.amounts
    for limit_name, remaining_name, reset_name, positions in limits.header_groups:
        if len(positions) == 1:
            position = positions[0]
        else:
            position = min(positions, key=lambda i: max(0, amounts[i] - windows[i].used))
        window = windows[position]
        remaining = amounts[position] - window.used
        headers[limit_name] = limits.amount_texts[position]
        headers[remaining_name] = str(remaining) if remaining > 0 else "0"
        headers[reset_name] = duration_text(window.reset_ms)
    return headers


def duration_text(milliseconds: int) -> str:
    """A duration as OpenAI writes its reset headers (Go's format): "850ms", "6s", "1.25s"."""
    if milliseconds < 1000:
        return f"{milliseconds}ms"
    if milliseconds < 1_000_000:  # at most 6 digits: the `g` format writes them all, without trailing zeros
        return f"{milliseconds / 1000:g}s"
    seconds, milliseconds = divmod(milliseconds, 1000)
    return f"{seconds}.{milliseconds:03d}".rstrip("0") + "s" if milliseconds else f"{seconds}s"


def rate_limiter_build() -> RateLimiter:
    """The worker's rate limiter from the settings: Redis with REDIS_URL, else the worker's memory."""
    windows: SlidingWindows = MemoryWindows()
    if settings.REDIS_URL:
        prefix = settings.CACHES["default"].get("KEY_PREFIX", "")
        redis = redis_pipe(settings.REDIS_URL, timeout_s=REDIS_TIMEOUT_S)
        windows = RedisWindows(redis, key_prefix=f"{prefix}:rw:limits")
    return RateLimiter(windows, key_rpm=settings.ROUTERWEB_KEY_RPM, key_tpm=settings.ROUTERWEB_KEY_TPM)
