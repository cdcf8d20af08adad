"""The gateway's Prometheus metrics, added up over every worker process of a machine.

One `GatewayMetrics` per worker, built with the runtime. The hot path touches it once per call, when
the outcome is recorded (`call_observed`, after the answer is sent): a few increments of plain dict
entries. Once a second (and before a scrape, and at shutdown) `flush` adds them to prometheus_client's
values, through label-bound children cached in a dict. Writing to prometheus_client directly cost
14.7 µs per call in multiprocess mode (a locked write to a memory-mapped file per value, ten per call
with a fallback), about 3-5% of a request's CPU at saturation.

Several workers: with `PROMETHEUS_MULTIPROC_DIR` set in the environment before the first import of
prometheus_client (settings.py reads `.env` into the environment first), every worker writes its values
to files in that directory and a scrape, served by any one worker, adds them up
(`prometheus_client.multiprocess`). The directory belongs to one deployment of one machine and is
emptied before the workers start (routerweb/serve.py `metrics_dir_reset`). Without it, the metrics
are this process's own (right for one worker, and for tests).

Per-worker gauges (calls in flight, the meter's `health()`, e.g. rows not stored yet) are set once a
second by `metrics_refresh` and summed over the live workers. Deployment-wide gauges (circuit state,
the meter's `shared_gauges()`, e.g. quarantined rows) are read at scrape time by the worker that
answers it (`scrape_text`).
"""

import asyncio
import logging
import os
from bisect import bisect_left
from collections import defaultdict
from collections.abc import Callable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from .metering import CallOutcome, Meter
from .usage import Usage

logger = logging.getLogger("routerweb.metrics")

CONTENT_TYPE = CONTENT_TYPE_LATEST
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
REFRESH_S = 1.0


def multiprocess_dir() -> str:
    """The directory the workers of this machine share their values in ('' when metrics are per process)."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR", "")


def error_class(attempt: dict) -> str:
    """A failed attempt's class, a short bounded label: `http_<status>` for an upstream's HTTP error,
    else the kind of transport failure."""
    if attempt.get("status"):
        return f"http_{attempt['status']}"
    reason = attempt.get("reason", "")
    for needle, label in (
        ("connect timeout", "connect_timeout"),
        ("timeout", "timeout"),
        ("DNS", "dns"),
        ("connection failed", "connect_failed"),
        ("closed", "connection_closed"),
        ("broken off", "broken_off"),
        ("larger than", "answer_too_large"),
    ):
        if needle in reason:
            return label
    return "other"


def call_outcome_label(outcome: CallOutcome) -> str:
    """ok, error, rejected or client_disconnected."""
    return "client_disconnected" if outcome.client_disconnected else outcome.status


class GatewayMetrics:
    def __init__(self) -> None:
        # In multiprocess mode the values live in files: the scrape builds its own registry.
        self.registry = None if multiprocess_dir() else CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "routerweb_requests",
            "Chat completions by answering model, requested model or route ('' when it resolved to nothing), "
            "HTTP status and outcome (ok, error, rejected, client_disconnected).",
            ["model", "route", "status", "outcome"],
            registry=r,
        )
        self.attempts = Counter(
            "routerweb_upstream_attempts",
            "Upstream attempts by model and result (ok, error).",
            ["model", "result"],
            registry=r,
        )
        self.failures = Counter(
            "routerweb_upstream_failures",
            "Failed upstream attempts by model and error class.",
            ["model", "error_class"],
            registry=r,
        )
        self.fallbacks = Counter(
            "routerweb_fallbacks",
            "Calls answered by a model after another failed, by answering model.",
            ["model"],
            registry=r,
        )
        self.rejections = Counter(
            "routerweb_rejections",
            "Calls refused before any upstream attempt, by error code (e.g. budget_exceeded, model_not_allowed).",
            ["code"],
            registry=r,
        )
        self.cache_hits = Counter(
            "routerweb_cache_hits", "Calls answered from the response cache, by model.", ["model"], registry=r
        )
        self.latency = Histogram(
            "routerweb_request_latency_seconds",
            "Whole call latency by answering model.",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.ttft = Histogram(
            "routerweb_time_to_first_token_seconds",
            "Streams: time to the first content, by model.",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.tokens = Counter(
            "routerweb_tokens", "Tokens by model and kind (prompt, completion).", ["model", "kind"], registry=r
        )
        self.cost = Counter(
            "routerweb_cost_usd",
            "Cost in USD by model (a float: the call rows hold the exact amounts).",
            ["model"],
            registry=r,
        )
        self.in_flight = Gauge(
            "routerweb_calls_in_flight", "Calls started and not recorded yet.", registry=r, multiprocess_mode="livesum"
        )
        self._meter_gauges: dict[str, Gauge] = {}
        self._children: dict[tuple, object] = {}
        # Accumulated on the hot path, handed to prometheus_client by `flush` (once a second, before a
        # scrape and at shutdown): a dict increment costs a tenth of a multiprocess value's locked write.
        self._counts: defaultdict[tuple, float] = defaultdict(float)
        self._observed: dict[tuple, list] = {}  # (histogram, model) -> [sum, count per bucket]

    def _child(self, metric, *labels: str):
        key = (metric, *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def call_observed(self, outcome: CallOutcome) -> None:
        """Count one recorded call (never raises: metrics must not break a call)."""
        try:
            self._observe(outcome)
        except Exception:
            logger.exception("metrics for %s failed", outcome.request_id)

    def _observe(self, outcome: CallOutcome) -> None:
        model = outcome.model.name if outcome.model is not None else ""
        route = outcome.requested if outcome.attempts else ""  # a name that resolved to candidates
        counts = self._counts
        counts[(self.requests, model, route, outcome.http_status, call_outcome_label(outcome))] += 1
        tried = 0
        for attempt in outcome.attempts:
            result = attempt["outcome"]
            if result == "skipped":
                continue
            tried += 1
            counts[(self.attempts, attempt["model"], result)] += 1
            if result == "error":
                counts[(self.failures, attempt["model"], error_class(attempt))] += 1
        if outcome.status == "rejected" and not tried:
            counts[(self.rejections, outcome.error_code or "other")] += 1
        if outcome.status == "cache_hit":
            counts[(self.cache_hits, model)] += 1
        if not model:
            return
        if tried > 1 and outcome.status == "ok":
            counts[(self.fallbacks, model)] += 1
        self._observe_seconds(self.latency, model, outcome.latency_ms / 1000)
        if outcome.ttft_ms is not None:
            self._observe_seconds(self.ttft, model, outcome.ttft_ms / 1000)
        usage = outcome.usage
        if isinstance(usage, Usage):
            counts[(self.tokens, model, "prompt")] += usage.prompt
            counts[(self.tokens, model, "completion")] += usage.completion
        if outcome.cost_usd:
            counts[(self.cost, model)] += outcome.cost_usd

    def _observe_seconds(self, histogram: Histogram, model: str, seconds: float) -> None:
        key = (histogram, model)
        observed = self._observed.get(key)
        if observed is None:
            observed = self._observed[key] = [0.0, [0] * (len(LATENCY_BUCKETS) + 1)]
        observed[0] += seconds
        observed[1][bisect_left(LATENCY_BUCKETS, seconds)] += 1  # the first bucket whose bound is >= seconds

    def flush(self) -> None:
        """Hand what was counted since the last flush to prometheus_client (this worker's files)."""
        counts, self._counts = self._counts, defaultdict(float)
        observed, self._observed = self._observed, {}
        for (metric, *labels), amount in counts.items():
            self._child(metric, *(str(label) for label in labels)).inc(amount)
        for (histogram, model), (total, buckets) in observed.items():
            child = self._child(histogram, model)
            # prometheus_client 0.26 (pinned) keeps a histogram child's sum and per-bucket counts in
            # `_sum` and `_buckets` (not cumulative, +Inf last): adding to them is `observe` in bulk.
            child._sum.inc(total)
            for index, count in enumerate(buckets):
                if count:
                    child._buckets[index].inc(count)

    def refresh(self, *, calls_in_flight: int, meter: Meter) -> None:
        """Set this worker's gauges and flush its counts (once a second)."""
        self.flush()
        self.in_flight.set(calls_in_flight)
        for name, value in meter.health().items():
            gauge = self._meter_gauges.get(name)
            if gauge is None:
                gauge = self._meter_gauges[name] = Gauge(
                    f"routerweb_{name}",
                    f"The meter's {name.replace('_', ' ')} (summed over workers).",
                    registry=self.registry,
                    multiprocess_mode="livesum",
                )
            gauge.set(value)

    def scrape_text(self, *, shared: dict[str, float], circuits: dict[str, bool]) -> bytes:
        """The exposition: every worker's values added up, plus the deployment-wide gauges read for
        this scrape (`shared`: the meter's, `circuits`: open or not, per model)."""
        if self.registry is None:
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
        else:
            registry = CollectorRegistry()
            registry.register(_Forward(self.registry))
        registry.register(_Shared(shared, circuits))
        return generate_latest(registry)


class _Forward(Collector):
    def __init__(self, registry: CollectorRegistry):
        self.registry = registry

    def collect(self):
        return self.registry.collect()


class _Shared(Collector):
    def __init__(self, shared: dict[str, float], circuits: dict[str, bool]):
        self.shared, self.circuits = shared, circuits

    def collect(self):
        for name, value in self.shared.items():
            yield GaugeMetricFamily(
                f"routerweb_{name}", f"The meter's {name.replace('_', ' ')} (whole deployment).", value=value
            )
        family = GaugeMetricFamily(
            "routerweb_circuit_open", "1 while a model's circuit is open (shared state).", labels=["model"]
        )
        for model, is_open in sorted(self.circuits.items()):
            family.add_metric([model], 1.0 if is_open else 0.0)
        yield family


async def metrics_refresh(metrics: GatewayMetrics, read: Callable[[], tuple[int, Meter]]) -> None:
    """Refresh the worker's gauges every REFRESH_S, for ever (a task on the serving event loop)."""
    while True:
        try:
            calls, meter = read()
            metrics.refresh(calls_in_flight=calls, meter=meter)
        except Exception:
            logger.exception("metrics refresh failed")
        await asyncio.sleep(REFRESH_S)


def metrics_process_exit(pid: int | None = None) -> None:
    """At a worker's exit: its live gauges stop counting (its counters stay in the sums)."""
    if multiprocess_dir():
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid or os.getpid())
