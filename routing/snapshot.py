"""The registry as each worker holds it: immutable snapshots of providers, models, routes and keys.

Plain data with no imports from the rest of routerweb, so that every layer (adapters, the router,
circuit breakers, the metering backend) can name these types; loading and reloading them is
routing/registry.py's job.
"""

from dataclasses import dataclass, field
from typing import Any


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
class ModelSnap:
    id: int
    name: str
    upstream_model: str
    provider: ProviderSnap
    enabled: bool
    max_output_tokens: int | None
    kind: str = "chat"  # "chat" or "embeddings": the endpoint that may call it (ModelEndpoint.Kind)


@dataclass(frozen=True, slots=True)
class RouteSnap:
    id: int
    name: str
    strategy: str
    targets: tuple[tuple[ModelSnap, int], ...]  # (model, weight) in position order
    cache_ttl_s: int | None = None  # the response cache is on for every request (routing/response_cache.py)
    cache_shared: bool = False  # cached answers are shared by every user of the route
    cache_generation: int = 0  # part of the route's cache keys; moved on to clear its entries

    @property
    def kind(self) -> str:
        """Its targets' kind (they share one: routing/registry_rules.py); "chat" for a route without targets."""
        return self.targets[0][0].kind if self.targets else "chat"


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
    rpm_limit: int | None = None  # requests and tokens per minute; None: the default for keys, if any
    tpm_limit: int | None = None

    def allows(self, name: str) -> bool:
        return self.allowed is None or name in self.allowed


@dataclass(frozen=True)
class Registry:
    version: str
    models: dict[str, ModelSnap] = field(default_factory=dict)
    routes: dict[str, RouteSnap] = field(default_factory=dict)
    keys_by_hash: dict[str, KeySnap] = field(default_factory=dict)
    # user id → (requests, tokens) per minute, None for unlimited (routing/ratelimit.py)
    user_limits: dict[int, tuple[int | None, int | None]] = field(default_factory=dict)
    metering: Any = None  # the metering backend's part (routing/metering.py), e.g. prices and budgets
