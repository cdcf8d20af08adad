"""One call's context as the gateway carries it: who calls, what happened so far, and its recording.

`CallContext.record` is the one way a call's outcome is recorded (exactly once per call): the rate
limits' token count is corrected to the call's usage, and the meter records the row.
"""

import secrets
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from .call_log import call_logged
from .metering import CallOutcome
from .ratelimit import Admission
from .response_cache import CachePolicy
from .router import Trace
from .snapshot import KeySnap
from .usage import Usage, UsageProblem

if TYPE_CHECKING:
    from .gateway import RecordedStream
    from .response_cache import ReplayedStream
    from .runtime import Runtime


@dataclass
class GatewayResponse:
    status: int
    headers: dict[str, str]
    body: bytes = b""
    stream: "RecordedStream | ReplayedStream | None" = None


@dataclass
class CallContext:
    """Who is calling and what happened so far; becomes the call row."""

    source: str
    key: KeySnap | None = None
    kind: str = "chat"  # the endpoint's kind of call (gateway.Endpoint.kind): "chat" or "embeddings"
    user_id: int | None = None
    request_id: str = field(default_factory=lambda: "req_" + secrets.token_hex(16))
    started: float = field(default_factory=time.perf_counter)
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    trace: Trace = field(default_factory=Trace)
    metering: Any = None  # what the meter reserved for the call (routing/metering.py)
    snapshot_part: Any = None  # the meter's part of the registry snapshot the call was routed with
    runtime: "Runtime | None" = None  # set by gateway.call_run
    admission: Admission | None = None  # what the rate limits counted (routing/ratelimit.py)
    rate_limit_headers: dict[str, str] = field(default_factory=dict)
    cache_header: str = ""  # the request's X-Router-Cache header
    cache_entry: tuple[str, CachePolicy] | None = None  # where a miss's answer is stored
    # Checked client headers an upstream of the request's own API gets (/v1/messages: `anthropic-beta`).
    native_headers: list[tuple[bytes, bytes]] = field(default_factory=list)

    def overhead_ms(self) -> float:
        return max(0.0, (time.perf_counter() - self.started - self.trace.upstream_s) * 1000)

    def outcome(self, **fields) -> CallOutcome:
        """The call row's outcome: what the context knows, plus `fields`."""
        return CallOutcome(
            request_id=self.request_id,
            created_at=self.created_at,
            source=self.source,
            user_id=self.user_id,
            api_key_id=self.key.id if self.key else None,
            overhead_ms=self.overhead_ms(),
            attempts=self.trace.as_list(),
            metering=self.metering,
            snapshot_part=self.snapshot_part,
            **fields,
        )

    def headers(self, model: str = "") -> dict[str, str]:
        return {
            "X-Request-Id": self.request_id,
            "X-Router-Model": model,
            "X-Router-Attempts": str(self.trace.tries),
            "X-Router-Overhead-Ms": f"{self.overhead_ms():.2f}",
            **self.rate_limit_headers,
            **({"X-Router-Cache": "miss"} if self.cache_entry else {}),
        }

    def record(self, outcome: CallOutcome) -> None:
        """Record the call's outcome (exactly once per call; never raises for bookkeeping)."""
        try:
            self._rate_limit_correct(outcome.usage)
            self.runtime.meter.record(outcome)
            self._observed(outcome)
        finally:
            self.runtime.calls_in_flight -= 1

    def _observed(self, outcome: CallOutcome) -> None:
        """The call's metrics and its log line (routing/metrics.py, routing/call_log.py); never raises."""
        runtime = self.runtime
        runtime.metrics.call_observed(outcome)
        key_prefix = self.key.prefix if self.key else ""
        call_logged(outcome, key_prefix=key_prefix, tries=self.trace.tries, with_content=runtime.log_content)

    def _rate_limit_correct(self, usage: Usage | UsageProblem | None) -> None:
        """The tokens the rate limits counted at admission become the call's usage: none without an
        answer, and an estimated usage keeps the bound."""
        if self.admission is None:
            return
        if isinstance(usage, Usage):
            tokens = usage.prompt + usage.completion
        else:
            tokens = None if isinstance(usage, UsageProblem) else 0
        self.runtime.ratelimiter.correct_soon(self.admission, tokens=tokens)
