"""An in-process snapshot of the registry (providers, models, routes, prices, usable API keys).

The gateway reads the registry on every request, so it must not touch the database: each worker
holds an immutable snapshot, and a version token in the shared state says when to reload it. Any
write to a registry table or to a user bumps the token (routing/signals.py), on commit; every worker
sees the new token on its next request, so a revoked key, or a key of a user deactivated or deleted,
is refused at once everywhere.
"""

import asyncio
import time
import uuid
import weakref
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from routerweb.db_executor import db_executor

from .shared_state import shared_state

VERSION_KEY = "registry:version"
# Without a shared state (no REDIS_URL), how often a miss (a key or model not in the snapshot) may
# reload the registry from the database: other processes cannot announce their changes.
MISS_RELOAD_S = 1.0


@dataclass(frozen=True, slots=True)
class ProviderSnap:
    id: int
    name: str
    base_url: str
    api_key_env: str
    connect_timeout_s: float
    read_timeout_s: float
    enabled: bool
    api_format: str = "openai"  # which adapter speaks to it (routing/providers/)


@dataclass(frozen=True, slots=True)
class PriceSnap:
    effective_from: datetime
    input_per_mtok: Decimal
    output_per_mtok: Decimal
    cached_input_per_mtok: Decimal | None


@dataclass(frozen=True, slots=True)
class ModelSnap:
    id: int
    name: str
    upstream_model: str
    provider: ProviderSnap
    enabled: bool
    max_output_tokens: int | None
    # Oldest first; the price for a call is the last one with effective_from <= the call's time.
    prices: tuple[PriceSnap, ...] = ()

    def price_at(self, at: datetime) -> PriceSnap | None:
        for price in reversed(self.prices):
            if price.effective_from <= at:
                return price
        return None


@dataclass(frozen=True, slots=True)
class RouteSnap:
    id: int
    name: str
    strategy: str
    targets: tuple[tuple[ModelSnap, int], ...]  # (model, weight) in position order


@dataclass(frozen=True, slots=True)
class KeySnap:
    id: int
    user_id: int
    username: str
    name: str
    prefix: str
    key_hash: str
    allowed: frozenset[str] | None  # model and route names; None means everything
    reads_dashboard: bool = False  # the read scope: the dashboard's JSON and CSV accept this key

    def allows(self, name: str) -> bool:
        return self.allowed is None or name in self.allowed


@dataclass(frozen=True)
class Registry:
    version: str
    models: dict[str, ModelSnap] = field(default_factory=dict)
    routes: dict[str, RouteSnap] = field(default_factory=dict)
    keys_by_hash: dict[str, KeySnap] = field(default_factory=dict)
    budget_by_user: dict[int, int] = field(default_factory=dict)  # user id -> budget id
    budget_by_key: dict[int, int] = field(default_factory=dict)  # API key id -> budget id

    def budget_ids(self, *, user_id: int | None, key_id: int | None) -> list[int]:
        """The budgets a call by this user with this key counts against."""
        ids = [self.budget_by_user.get(user_id), self.budget_by_key.get(key_id)]
        return [budget_id for budget_id in ids if budget_id is not None]


def registry_load(version: str = "") -> Registry:
    """Read the whole registry from the database (synchronous; a handful of queries)."""
    from billing.models import Budget, Price

    from .models import ModelEndpoint, Provider, Route

    providers = {
        p.id: ProviderSnap(
            id=p.id,
            name=p.name,
            base_url=p.base_url.rstrip("/"),
            api_format=p.api_format,
            api_key_env=p.api_key_env,
            connect_timeout_s=p.connect_timeout_s,
            read_timeout_s=p.read_timeout_s,
            enabled=p.enabled,
        )
        for p in Provider.objects.all()
    }
    prices: dict[int, list[PriceSnap]] = {}
    for price in Price.objects.order_by("model_id", "effective_from"):
        prices.setdefault(price.model_id, []).append(
            PriceSnap(price.effective_from, price.input_per_mtok, price.output_per_mtok, price.cached_input_per_mtok)
        )
    models = {
        m.name: ModelSnap(
            id=m.id,
            name=m.name,
            upstream_model=m.upstream_model,
            provider=providers[m.provider_id],
            enabled=m.enabled and providers[m.provider_id].enabled,
            max_output_tokens=m.max_output_tokens,
            prices=tuple(prices.get(m.id, ())),
        )
        for m in ModelEndpoint.objects.all()
    }
    by_id = {m.id: m for m in models.values()}
    routes = {
        r.name: RouteSnap(
            id=r.id,
            name=r.name,
            strategy=r.strategy,
            targets=tuple((by_id[t.model_id], t.weight) for t in r.targets.all()),
        )
        for r in Route.objects.prefetch_related("targets")
    }
    keys = api_keys_load()
    budget_by_user, budget_by_key = {}, {}
    for budget_id, user_id, key_id in Budget.objects.values_list("id", "user_id", "api_key_id"):
        if user_id is not None:
            budget_by_user[user_id] = budget_id
        else:
            budget_by_key[key_id] = budget_id
    return Registry(
        version=version,
        models=models,
        routes=routes,
        keys_by_hash=keys,
        budget_by_user=budget_by_user,
        budget_by_key=budget_by_key,
    )


def api_keys_load(*, key_hash: str | None = None) -> dict[str, KeySnap]:
    """The keys that authenticate, by hash (only `key_hash`'s when given): not revoked, and owned by a
    user who exists and is active. The one rule for which keys are usable, wherever a key is accepted.
    """
    from .models import ApiKey

    rows = ApiKey.objects.filter(revoked_at__isnull=True, user__is_active=True)
    if key_hash is not None:
        rows = rows.filter(key_hash=key_hash)
    keys = {}
    for key in rows.select_related("user").prefetch_related("allowed_models", "allowed_routes"):
        allowed = {m.name for m in key.allowed_models.all()} | {r.name for r in key.allowed_routes.all()}
        keys[key.key_hash] = KeySnap(
            id=key.id,
            user_id=key.user_id,
            username=key.user.get_username(),
            name=key.name,
            prefix=key.prefix,
            key_hash=key.key_hash,
            allowed=frozenset(allowed) or None,
            reads_dashboard=key.reads_dashboard,
        )
    return keys


class RegistryCache:
    """The worker's snapshot; `get()` costs one shared-state read unless the registry changed.

    The API's hot path reads the version together with the circuit state instead (one round trip
    for both): it starts from `snapshot()`, unchecked, and calls `for_version()` with what it read.
    """

    def __init__(self) -> None:
        self._registry: Registry | None = None
        self._loaded_at = 0.0
        # One reload at a time per event loop: a burst of requests after a change waits for one load.
        self._reload_locks: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def snapshot(self) -> Registry | None:
        """The snapshot as it is, without asking whether it is still current."""
        return self._registry

    async def get(self) -> Registry:
        (version,) = await shared_state().get_many([VERSION_KEY])
        return await self.for_version(version)

    async def get_after_miss(self) -> Registry:
        """`get()`, for a request that named a key or model the snapshot does not have.

        With Redis every process announces its changes there. Without it (one worker, local memory)
        a key created by `manage.py createapikey` or a registry imported while the server runs
        leaves no trace in this process's memory: the snapshot is reloaded from the database, at
        most once per MISS_RELOAD_S, so that a scanner's made-up keys cannot make it reload more.
        """
        if not shared_state().shared_between_processes and time.monotonic() - self._loaded_at >= MISS_RELOAD_S:
            self._loaded_at = time.monotonic()
            registry_version_bump()
        return await self.get()

    async def for_version(self, version: str | None) -> Registry:
        """The registry at `version`, a published version token just read (None: nothing published yet)."""
        registry = self._registry
        if registry is not None and version is not None and registry.version == version:
            return registry
        lock = self._reload_locks.setdefault(asyncio.get_running_loop(), asyncio.Lock())
        async with lock:
            registry = self._registry
            if registry is not None and version is not None and registry.version == version:
                return registry  # another request reloaded it while this one waited
            return await self._reload(version)

    async def _reload(self, version: str | None) -> Registry:
        if version is None:
            # Nothing published yet (fresh cache): publish a token so every worker agrees on it.
            version = uuid.uuid4().hex
            if not await shared_state().add(VERSION_KEY, version, ttl=10 * 365 * 86400):
                (version,) = await shared_state().get_many([VERSION_KEY])
                version = version or uuid.uuid4().hex
        registry = await db_executor.run(registry_load, version)
        self._registry, self._loaded_at = registry, time.monotonic()
        return registry

    def clear(self) -> None:
        self._registry = None


registry_cache = RegistryCache()


def registry_version_bump() -> None:
    """Tell every worker to reload the registry (call after the change is committed)."""
    shared_state().set_sync(VERSION_KEY, uuid.uuid4().hex)
