"""How a call is metered: the contract between the gateway and whatever counts the money.

The gateway asks its meter twice per request: `reserve` before the first upstream call (it may
refuse the call, or narrow its candidates) and `record` exactly once, when the outcome is known.
What that means (prices, budgets, cost rows) is the metering backend's business. The setting
`ROUTERWEB_METER` names the backend by dotted path, the way `SESSION_ENGINE` picks a session
backend; routing never imports it. routerweb's own backend is `billing.metering.BillingMeter`.

A backend may keep its own part of the registry snapshot (`snapshot_part`, loaded with the rest and
reloaded with it), so that reserving needs no database read, reads recorded calls back for the
playground (`recorded_calls`; `stored_call` with what a call asked and answered, to open or replay
it), and prices an answer's usage for the client (`usage_cost`, the answer's `usage.cost`).
"""

from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.utils.module_loading import import_string

from .usage import Usage, UsageProblem

if TYPE_CHECKING:  # the registry loads the meter's snapshot part: no import back at run time
    from .embedding_request import EmbeddingRequest
    from .router import Trace
    from .schemas import ChatRequest
    from .snapshot import ModelSnap


@dataclass(frozen=True, slots=True)
class CacheHitOf:
    """The call whose stored answer a cache hit replayed: what it cost is what the hit saved."""

    request_id: str
    created_at: datetime  # prices in force then give the original call's exact cost
    usage: Usage


@dataclass(slots=True)
class CallOutcome:
    """What happened to one request, as the gateway saw it: what the meter records.

    `metering` is what `reserve` returned for the call (the backend's own, opaque to routing), and
    `snapshot_part` the backend's part of the registry snapshot the call was routed with. A cache hit
    (status `cache_hit`) costs nothing and names the call it replayed (`cache_hit_of`), so that the
    backend can price what it saved; `model` is the model that gave the stored answer.
    """

    request_id: str
    created_at: datetime
    source: str
    user_id: int | None
    api_key_id: int | None
    requested: str
    model: "ModelSnap | None"
    status: str
    http_status: int
    error_code: str = ""
    kind: str = "chat"  # "chat" or "embeddings": the endpoint called
    stream: bool = False
    messages: list[Any] = field(default_factory=list)
    input_chars: int = 0  # embeddings: characters of the string inputs (estimates tokens without usage)
    input_token_ids: int = 0  # embeddings: token ids of the token inputs
    usage: Usage | UsageProblem | None = None  # None: no answer came back
    completion_chars: int = 0  # for streams: characters of content that reached the client
    latency_ms: int = 0
    ttft_ms: int | None = None
    overhead_ms: float = 0.0
    attempts: list[dict] = field(default_factory=list)
    client_disconnected: bool = False
    metering: Any = None
    snapshot_part: Any = None
    cost_usd: float | None = None  # set by the meter's record() when it knows the cost (for metrics and logs)
    cache_hit_of: CacheHitOf | None = None  # status "cache_hit": the call answered from the cache
    # What was asked and answered, for a meter that stores call bodies: references to what the gateway
    # holds anyway (nothing is copied or parsed here; the meter decides whether to keep any of it).
    request_body: dict[str, Any] | None = None  # the client's request as parsed (None: not valid JSON)
    answer: bytes | dict[str, Any] | None = None  # a non-streamed answer: the chat completion, JSON or a dict
    answer_text_parts: list[str] | None = None  # a streamed answer's text in parts (streaming.py keeps 1 MiB)
    answer_tool_calls: list[dict[str, Any]] = field(default_factory=list)  # a streamed answer's tool calls


@dataclass(frozen=True, slots=True)
class CallPlan:
    """A call about to be routed: who calls, what was asked (`request`: a chat completion or embeddings
    request, whose `body_size`, `max_tokens` and `choices` bound its tokens), which candidates would be tried."""

    request_id: str
    created_at: datetime
    user_id: int | None
    api_key_id: int | None
    registry_version: str
    snapshot_part: Any
    request: "ChatRequest | EmbeddingRequest"
    candidates: "list[ModelSnap]"
    trace: "Trace"  # a candidate the meter rules out is noted here as skipped, with the reason


@dataclass(frozen=True, slots=True)
class Reserved:
    """What `reserve` decided: the candidates that may be tried, and the backend's note for `record`."""

    candidates: "list[ModelSnap]"
    metering: Any = None


@dataclass(frozen=True, slots=True)
class RecordedCall:
    """A recorded call as the playground shows it (money as exact decimal strings)."""

    request_id: str
    requested: str
    model: str | None
    provider: str | None
    status: str
    http_status: int
    error_code: str
    stream: bool
    prompt_tokens: int
    cached_tokens: int
    completion_tokens: int
    usage_estimated: bool
    cost_usd: str | None
    unpriced: bool
    latency_ms: int
    ttft_ms: int | None
    client_disconnected: bool
    attempts: list[dict]
    model_id: int | None = None
    cache_write_tokens: int = 0
    price_text: str = ""  # which price produced the cost, in words (empty: the backend does not say)


@dataclass(frozen=True, slots=True)
class StoredCall:
    """A recorded call with what it asked and answered, for the playground to open or replay it.

    `body_stored` is False when the call's body was not stored (storage off for it, or deleted by
    retention): the other body fields are then empty. `parameters` are the request's fields besides
    `messages`, as the client sent them (model, stream and the sampling parameters). `own`: the call
    is the viewer's own (only those count in compare-mode votes).
    """

    call: RecordedCall
    own: bool
    body_stored: bool
    messages: list[Any] = field(default_factory=list)
    parameters: dict[str, Any] = field(default_factory=dict)
    answer: str = ""
    tool_calls: list[Any] = field(default_factory=list)
    request_truncated: bool = False
    answer_truncated: bool = False


class Meter(ABC):
    """A metering backend. One instance per process, built on first use (`meter()`)."""

    def snapshot_part(self) -> Any:
        """The backend's part of the registry snapshot, read from the database (synchronous; runs in a
        database thread with the rest of the snapshot, and again whenever the registry changes)."""
        return None

    @abstractmethod
    async def reserve(self, plan: CallPlan) -> Reserved:
        """Before the first upstream call: set aside what the call may cost. Raises ApiError to refuse
        the call (it is then recorded as rejected, with nothing reserved)."""

    @abstractmethod
    def record(self, outcome: CallOutcome) -> None:
        """Exactly once per request (reserved or not), when its outcome is known; must not block the
        event loop, and never raises."""

    def usage_cost(self, snapshot_part: Any, model: "ModelSnap", usage: Usage, at: datetime) -> str | None:
        """What `usage` on `model` costs at `at` with the prices in `snapshot_part`, as an exact decimal
        string in USD (the answer's `usage.cost`), or None when the backend cannot say (no price).
        Called on the event loop for each answer that reports its usage: it must be cheap and must not
        read the database."""
        return None

    def recorded_calls(self, *, user_id: int, request_ids: Iterable[str]) -> dict[str, RecordedCall]:
        """`user_id`'s recorded calls among `request_ids` (synchronous, for the playground's views)."""
        return {}

    def stored_call(self, *, viewer: Any, request_id: str) -> StoredCall | None:
        """The recorded call `request_id` with its stored body, if `viewer` (a user) may see it under the
        backend's access rules; None when there is no such call or the viewer may not see it (the two
        are not told apart). Synchronous, for the playground's views."""
        return None

    def health(self) -> dict[str, float]:
        """This process's gauges, from memory (read once a second for the metrics, and by /readyz),
        e.g. `{"recorder_backlog_rows": 3}`; names are metric names without the `routerweb_` prefix."""
        return {}

    def shared_gauges(self) -> dict[str, float]:
        """Gauges of the whole deployment (synchronous, in a database thread, at each metrics scrape),
        e.g. rows set aside because they could not be stored."""
        return {}

    def ready(self) -> dict[str, bool]:
        """For /readyz: this process's metering parts and whether each works (all true: ready)."""
        return {}

    def start(self) -> None:  # noqa: B027 (optional hook: nothing to start by default)
        """At the worker's start-up (the ASGI lifespan): start background work, replay what a dead
        process left."""

    def stop(self) -> None:  # noqa: B027 (optional hook)
        """At the worker's shutdown: store what is pending and hand back what the worker holds."""


@cache
def meter() -> Meter:
    """This process's metering backend, the class named by `ROUTERWEB_METER`."""
    return import_string(settings.ROUTERWEB_METER)()
