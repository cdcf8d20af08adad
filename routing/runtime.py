"""The worker's long-lived parts, built in one place and handed to the code that serves requests.

`runtime_build()` makes them from the settings: the registry cache (the worker's snapshot), the
circuit breakers on the shared state, and the metering backend. The ASGI lifespan builds one per
worker, starts and stops it (`runtime_start`, `runtime_stop`), and puts it in the lifespan state,
which the server copies into every request's scope: handlers take it with `runtime_of(request)`.
Tests build their own, with a fake clock where time matters.
"""

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from django.conf import settings

from .circuit import CircuitBreaker
from .metering import Meter, meter
from .metrics import GatewayMetrics, metrics_process_exit, metrics_refresh
from .ratelimit import RateLimiter, rate_limiter_build
from .registry import RegistryCache
from .response_cache import ResponseCache, response_cache_build
from .shared_state import SharedState, shared_state


@dataclass(eq=False)
class Runtime:
    registry: RegistryCache
    breaker: CircuitBreaker
    meter: Meter
    metrics: GatewayMetrics = field(default_factory=GatewayMetrics)
    ratelimiter: RateLimiter = field(default_factory=rate_limiter_build)
    response_cache: ResponseCache = field(default_factory=response_cache_build)
    # Calls started whose outcome is not recorded yet (a stream's lasts until its last byte is sent).
    calls_in_flight: int = 0
    log_content: bool = False  # the call log line carries the prompt (ROUTERWEB_LOG_CONTENT)
    _watch: asyncio.Task | None = field(default=None, repr=False)
    _metrics_refresh: asyncio.Task | None = field(default=None, repr=False)


def runtime_build(*, state: SharedState | None = None, clock: Callable[[], float] = time.time) -> Runtime:
    """A worker's runtime from the settings; `clock` (wall-clock seconds) drives the circuit breakers."""
    breaker = CircuitBreaker(
        state or shared_state(),
        failures_to_open=settings.ROUTERWEB_CIRCUIT_FAILURES,
        open_seconds=settings.ROUTERWEB_CIRCUIT_OPEN_S,
        clock=clock,
    )
    return Runtime(registry=RegistryCache(), breaker=breaker, meter=meter(), log_content=settings.ROUTERWEB_LOG_CONTENT)


def runtime_start(runtime: Runtime) -> None:
    """At start-up, on the serving event loop: the meter starts, and the registry watch (the registry
    version read twice a second, routing/registry.py)."""
    runtime.meter.start()
    runtime._watch = asyncio.create_task(runtime.registry.watch(), name="registry-watch")
    read = lambda: (runtime.calls_in_flight, runtime.meter)  # noqa: E731
    runtime._metrics_refresh = asyncio.create_task(metrics_refresh(runtime.metrics, read), name="metrics-refresh")


async def runtime_calls_drained(runtime: Runtime, *, grace_s: float, poll_s: float = 0.05) -> bool:
    """At shutdown, once the server accepts no more requests: wait until every call in flight is recorded
    (streams included), at most `grace_s`. True if none is left."""
    deadline = time.monotonic() + grace_s
    while runtime.calls_in_flight > 0 and time.monotonic() < deadline:
        await asyncio.sleep(poll_s)
    return runtime.calls_in_flight <= 0


async def runtime_stop(runtime: Runtime) -> None:
    """At shutdown: the registry watch and the metrics refresh end, and this worker's live gauges stop
    counting. The meter is stopped by the caller, in a database thread (it stores what is pending and
    hands back what the worker holds)."""
    for name in ("_watch", "_metrics_refresh"):
        task = getattr(runtime, name)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            setattr(runtime, name, None)
    runtime.metrics.flush()
    metrics_process_exit()


_installed: Runtime | None = None


def runtime_install(runtime: Runtime) -> None:
    """Make `runtime` this process's, for the requests a server without lifespan state serves (Django's
    test client, a management shell)."""
    global _installed
    _installed = runtime


def runtime_installed() -> Runtime | None:
    """This process's runtime, once a server has started one."""
    return _installed


def runtime_of(request) -> Runtime:
    """The runtime that serves `request`: from its scope's lifespan state, else this process's."""
    state = getattr(request, "scope", {}).get("state") or {}
    runtime = state.get("runtime") or _installed
    if runtime is None:
        runtime = _installed_default()
    return runtime


def _installed_default() -> Runtime:
    runtime = runtime_build()
    runtime_install(runtime)
    return runtime
