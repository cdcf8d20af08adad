"""Per-model circuit breakers (closed → open → half-open → closed) in the shared state.

- closed: calls go through; each retryable failure adds to a consecutive-failure count, a success
  resets it. At `failures_to_open` the circuit opens for `open_seconds`.
- A 429 with Retry-After opens it at once for that long: the provider said when to come back.
- open: the model is skipped until its open-until time.
- half-open (open-until has passed): exactly one request, across all workers, wins an atomic lock
  and probes; its success closes the circuit, its failure re-opens it. Others keep skipping.
- An upstream 401/403 means the provider's key is bad: the provider's circuit opens, which skips
  every model of that provider until it expires.

Nothing is disabled for good: every open state expires into a probe.
"""

import time
from collections.abc import Callable
from dataclasses import dataclass

from .shared_state import SharedState
from .snapshot import ModelSnap, ProviderSnap

STATE_TTL_S = 24 * 3600.0
FAILURE_WINDOW_S = 600.0


@dataclass(slots=True)
class CircuitView:
    """What one read of the shared state said about a model (and its provider)."""

    open_until: float | None = None
    failures: int = 0
    provider_open_until: float | None = None
    probing: bool = False  # set by admit() when this request holds the half-open probe


def _model_keys(name: str) -> tuple[str, str, str]:
    return f"cb:m:{name}:open", f"cb:m:{name}:fails", f"cb:m:{name}:probe"


def _provider_key(name: str) -> str:
    return f"cb:p:{name}:open"


class CircuitBreaker:
    def __init__(
        self,
        state: SharedState,
        *,
        failures_to_open: int,
        open_seconds: float,
        clock: Callable[[], float] = time.time,
    ):
        self.state = state
        self.failures_to_open = failures_to_open
        self.open_seconds = open_seconds
        self.clock = clock  # wall-clock seconds: open-until times are shared between machines

    async def read(self, models: list[ModelSnap]) -> dict[str, CircuitView]:
        """The circuit state of every candidate, in one round trip."""
        views, _ = await self.read_with(models, [])
        return views

    async def read_with(
        self, models: list[ModelSnap], other_keys: list[str]
    ) -> tuple[dict[str, CircuitView], list[str | None]]:
        """`read()`, plus the values of `other_keys` in the same round trip."""
        keys: list[str] = []
        for model in models:
            open_key, fails_key, _ = _model_keys(model.name)
            keys += (open_key, fails_key, _provider_key(model.provider.name))
        values = await self.state.get_many(keys + other_keys)
        views = {}
        for i, model in enumerate(models):
            open_until, fails, provider_open = values[3 * i : 3 * i + 3]
            views[model.name] = CircuitView(
                open_until=float(open_until) if open_until else None,
                failures=int(fails) if fails else 0,
                provider_open_until=float(provider_open) if provider_open else None,
            )
        return views, values[len(keys) :]

    def open_reason(self, model: ModelSnap, view: CircuitView) -> str | None:
        """Why `model` would be skipped now by an open circuit, without taking the half-open probe."""
        now = self.clock()
        if view.provider_open_until and view.provider_open_until > now:
            return f"circuit open: provider {model.provider.name} rejected its key"
        if view.open_until and view.open_until > now:
            return f"circuit open, retry in {view.open_until - now:.0f}s"
        return None

    async def admit(self, model: ModelSnap, view: CircuitView) -> str | None:
        """None if `model` may be called now, else the reason it is skipped."""
        now = self.clock()
        if view.provider_open_until and view.provider_open_until > now:
            wait = view.provider_open_until - now
            return f"circuit open: provider {model.provider.name} rejected its key, retry in {wait:.0f}s"
        if view.open_until is None:
            return None
        if view.open_until > now:
            return f"circuit open, retry in {view.open_until - now:.0f}s"
        _, _, probe_key = _model_keys(model.name)
        if await self.state.add(probe_key, "1", ttl=model.provider.read_timeout_s + 5):
            view.probing = True
            return None
        return "circuit half-open, another request is probing"

    async def record_success(self, model: ModelSnap, view: CircuitView) -> None:
        if view.failures or view.open_until or view.probing:
            await self.state.delete(*_model_keys(model.name))

    async def record_failure(self, model: ModelSnap, view: CircuitView, *, retry_after_s: float | None = None) -> None:
        open_key, fails_key, probe_key = _model_keys(model.name)
        if view.probing or retry_after_s:
            await self._open(open_key, retry_after_s or self.open_seconds)
            await self.state.delete(fails_key, probe_key)
            return
        if await self.state.incr(fails_key, ttl=FAILURE_WINDOW_S) >= self.failures_to_open:
            await self._open(open_key, self.open_seconds)
            await self.state.delete(fails_key)

    async def open_provider(self, provider: ProviderSnap) -> None:
        await self.state.set(_provider_key(provider.name), str(self.clock() + self.open_seconds), ttl=self.open_seconds)

    async def _open(self, open_key: str, seconds: float) -> None:
        await self.state.set(open_key, str(self.clock() + seconds), ttl=STATE_TTL_S)
