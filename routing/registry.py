"""An in-process snapshot of the registry (providers, models, routes, prices, usable API keys, budgets).

The gateway reads the registry on every request, so it must not touch the database: each worker
holds an immutable snapshot labelled with the registry version it was loaded at, and reloads it
when the version moves (routing/registry_version.py): at once when a new token appears in the
shared state, and at most about a second after any committed change (to a registry table, or to a
user: a key of a user deactivated or deleted stops working) through `RegistryCache.watch`, which
reads the version in the database twice a second, off the request path.

While the database is down the worker keeps serving from its snapshot; a failed reload is logged
and tried again at the next check.
"""

import asyncio
import logging
import time
import weakref
from collections.abc import Awaitable, Callable

from django.db import DatabaseError

from routerweb.db_executor import db_executor

from .metering import meter
from .registry_version import VERSION_KEY, registry_version_read
from .shared_state import shared_state
from .snapshot import KeySnap, ModelSnap, ProviderSnap, Registry, RouteSnap

logger = logging.getLogger("routerweb.registry")

# How often each worker reads the registry version in the database.
VERSION_CHECK_S = 0.5  # within "about a second" of any change, with room to spare under load
# While reloads fail (the database is down), at most one warning per this many seconds.
FAILURE_LOG_S = 60.0


class RegistryUnavailable(Exception):
    """There is no snapshot yet and the database cannot be read."""


def registry_load() -> Registry:
    """Read the whole registry from the database (synchronous; a handful of queries).

    The version is read first: the snapshot holds at least that version's changes, so a version read
    later that differs means a reload, never a change missed.
    """
    from .models import ModelEndpoint, Provider, Route, UserRateLimit

    version = registry_version_read()
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
    models = {
        m.name: ModelSnap(
            id=m.id,
            name=m.name,
            upstream_model=m.upstream_model,
            provider=providers[m.provider_id],
            enabled=m.enabled and providers[m.provider_id].enabled,
            max_output_tokens=m.max_output_tokens,
            kind=m.kind,
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
            cache_ttl_s=r.cache_ttl_s,
            cache_shared=r.cache_shared,
            cache_generation=r.cache_generation,
        )
        for r in Route.objects.prefetch_related("targets")
    }
    return Registry(
        version=version,
        models=models,
        routes=routes,
        keys_by_hash=api_keys_load(),
        user_limits={
            u.user_id: (u.rpm_limit, u.tpm_limit)
            for u in UserRateLimit.objects.all()
            if u.rpm_limit is not None or u.tpm_limit is not None
        },
        metering=meter().snapshot_part(),
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
            rpm_limit=key.rpm_limit,
            tpm_limit=key.tpm_limit,
        )
    return keys


class RegistryCache:
    """The worker's snapshot; `get()` costs one shared-state read unless the registry changed.

    The API's hot path reads the version token together with the circuit state instead (one round
    trip for both): it starts from `snapshot()`, unchecked, and calls `for_token()` with what it read.
    A snapshot is replaced, never changed: a request that holds one sees one version throughout.

    `load` reads the registry and `version_read` its committed version (both synchronous, run in a
    database thread by `run`); `clock` is monotonic seconds.
    """

    def __init__(
        self,
        *,
        load: Callable[[], Registry] = registry_load,
        version_read: Callable[[], str] = registry_version_read,
        run: Callable[..., Awaitable] = db_executor.run,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._load = load
        self._version_read = version_read
        self._run = run
        self._clock = clock
        self._miss_checked_at = float("-inf")
        self._registry: Registry | None = None
        self._token: str | None = None  # the shared-state token the snapshot answers to
        self._failure_logged_at: float | None = None
        # One reload at a time per event loop: a burst of requests after a change waits for one load.
        self._reload_locks: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def snapshot(self) -> Registry | None:
        """The snapshot as it is, without asking whether it is still current."""
        return self._registry

    async def get(self) -> Registry:
        """The current registry: reloaded first if the shared state announces a change."""
        (token,) = await shared_state().get_many([VERSION_KEY])
        return await self.for_token(token)

    async def for_token(self, token: str | None) -> Registry:
        """The registry for `token`, the version token just read from the shared state (None: none there).

        A token other than the one the snapshot answers to means a change: the snapshot is reloaded
        (raises RegistryUnavailable only when there is no snapshot and the database cannot be read).
        """
        registry = self._registry
        if registry is not None and token == self._token:
            return registry
        async with self._lock():
            if self._registry is not None and token == self._token:
                return self._registry  # another request reloaded it while this one waited
            registry = await self._reload()
            # Only now: a request reading the token meanwhile must wait for the reload, not take the old
            # snapshot. Taken even if the reload failed (the old snapshot is served; the version check
            # retries), so that a database outage does not make every request try again.
            self._token = token
            return registry

    async def get_after_miss(self) -> Registry:
        """`get()`, for a request naming a key, model or route the snapshot lacks: the database's version
        is read too (at most once per VERSION_CHECK_S), so that a key created a moment ago by another
        process works at once, while made-up names cost at most two queries a second."""
        if self._clock() - self._miss_checked_at >= VERSION_CHECK_S:
            self._miss_checked_at = self._clock()
            await self.check_version()
        return await self.get()

    async def check_version(self) -> Registry:
        """Read the committed version and reload if the snapshot is at another one (one query when current)."""
        try:
            version = await self._run(self._version_read)
        except DatabaseError as error:
            return self._keep_snapshot(error)
        self._failure_logged_at = None
        if self._registry is not None and self._registry.version == version:
            return self._registry
        async with self._lock():
            if self._registry is not None and self._registry.version == version:
                return self._registry
            return await self._reload()

    async def watch(self, *, interval_s: float = VERSION_CHECK_S) -> None:
        """Check the version every `interval_s`, for ever (run it as a task on the serving event loop)."""
        while True:
            try:
                await self.check_version()
            except RegistryUnavailable:
                pass  # logged; the next check tries again
            except Exception:
                logger.exception("registry version check failed")
            await asyncio.sleep(interval_s)

    def clear(self) -> None:
        self._registry = None
        self._token = None

    def _lock(self) -> asyncio.Lock:
        return self._reload_locks.setdefault(asyncio.get_running_loop(), asyncio.Lock())

    async def _reload(self) -> Registry:
        try:
            registry = await self._run(self._load)
        except DatabaseError as error:
            return self._keep_snapshot(error)
        self._registry, self._failure_logged_at = registry, None
        return registry

    def _keep_snapshot(self, error: DatabaseError) -> Registry:
        """The snapshot, when the database could not be read (logged); RegistryUnavailable without one."""
        now = self._clock()
        if self._failure_logged_at is None or now - self._failure_logged_at >= FAILURE_LOG_S:
            self._failure_logged_at = now
            serving = "serving the snapshot" if self._registry is not None else "no snapshot yet"
            logger.warning("registry could not be read from the database (%s); %s", error, serving)
        if self._registry is None:
            raise RegistryUnavailable(str(error)) from error
        return self._registry
