"""Fill the database with realistic synthetic call rows, for the dashboard's demo and benchmarks.

Long: one command read from top to bottom (the registry it draws from, the users and keys, the
call shapes, the insertion); its parts serve nothing else, so they stay together.

90 days (by default) of traffic ending now: weekday and office-hour peaks, a slow growth, a few heavy
users and many light ones (each key sticks to a few models or routes), ~4% errors and rejections,
fallbacks on routes, streams with TTFT, cached and estimated tokens, and a model without a price.
Then the rollups of those days are rebuilt, and a few budgets and playground votes are added.

A synthetic call takes the path of a real one: a `CallOutcome` naming models of the gateway's
registry snapshot (`registry_load`) becomes its row through `call_row` (tokens, and the cost with the
price in force at the call's time) and is stored through `calls_insert` (COPY on PostgreSQL); then
`rollups_rebuild` counts the new days. Outcomes are drawn from per-name pools of pre-built ones, and
the row of each pooled outcome is built once per price in force, so that a row costs a few random
draws. `--seed` makes the run repeatable on the same starting database.

The synthetic past is older than the registry (seed_demo prices a model from the moment it runs), so
a model's first price is taken to apply from the first synthetic day on; later prices apply from
when they took effect, as for real calls.
"""

from __future__ import annotations

import io
import math
import random
import time
from bisect import bisect
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from itertools import accumulate, islice
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError
from django.db import connection, transaction
from django.db.models import Max, Sum
from django.utils import timezone
from tqdm import tqdm

from billing.call_insert import calls_insert
from billing.calls import call_row
from billing.metering import BillingSnapshot
from billing.models import Budget, Call, CallRollup
from billing.pricing import PriceSnap
from billing.rollups import rollups_rebuild
from routing.metering import CallOutcome
from routing.models import ApiKey, ModelEndpoint, PreferenceVote, Provider
from routing.registry import registry_load
from routing.services import api_key_create
from routing.snapshot import ModelSnap
from routing.usage import CHARS_PER_TOKEN, usage_parse

SHAPES_PER_NAME = 3000
SAMPLE_TABLE = 1 << 16
UNPRICED_MODEL = "ft-support-bot"
FIRST_NAMES = (
    "maria", "james", "aiko", "liam", "sofia", "noah", "chen", "olivia", "mateo", "amara", "lucas", "priya",
    "ethan", "yara", "omar", "lena", "diego", "hana", "felix", "nora", "ravi", "elena", "tomas", "ines",
    "kofi", "mia", "arjun", "zoe", "ivan", "leila", "marco", "sara", "yusuf", "emma", "hugo", "nadia",
)  # fmt: skip
LAST_INITIALS = "abcdefghjklmnoprstvwz"
# Per model name: (base latency ms, ms per output token); others get (500, 10).
SPEED = {
    "gpt-4o": (450, 9),
    "gpt-4o-mini": (300, 5),
    "claude-sonnet-4": (650, 11),
    "deepseek-chat": (800, 14),
    "qwen-max": (600, 10),
    "llama3.2": (150, 8),
    "demo-echo": (300, 6),
}


class Sampler:
    """Draws indices by weight in O(1): a table of indices laid out in proportion to the weights."""

    def __init__(self, weights: list[float], rng: random.Random):
        cumulative = list(accumulate(weights))
        total = cumulative[-1]
        self.table = [min(bisect(cumulative, (i + rng.random()) * total / SAMPLE_TABLE), len(weights) - 1)
                      for i in range(SAMPLE_TABLE)]  # fmt: skip
        rng.shuffle(self.table)
        self.rng = rng

    def __call__(self) -> int:
        return self.table[int(self.rng.random() * SAMPLE_TABLE)]


class Command(BaseCommand):
    help = "Add --rows synthetic call rows over the last --days days (with users, keys, budgets and votes)."

    def add_arguments(self, parser):
        parser.add_argument("--rows", type=int, required=True, help="how many call rows to add")
        parser.add_argument("--days", type=int, default=90, help="spread over this many days up to now (90)")
        parser.add_argument("--users", type=int, default=60, help="synthetic users (60)")
        parser.add_argument("--seed", type=int, default=1, help="random seed (1)")
        parser.add_argument(
            "--until", type=datetime.fromisoformat, default=None, help="the last call's time, ISO 8601 (default: now)"
        )
        parser.add_argument("--batch", type=int, default=5000, help="rows per insert batch (5000)")
        parser.add_argument("--no-progress", action="store_true", help="no progress bar")

    def handle(self, *args, rows, days, users, seed, until, batch, no_progress, **options):
        if rows < 1 or days < 1 or users < 1:
            raise CommandError("--rows, --days and --users must be at least 1")
        if until is not None and until.tzinfo is None:
            until = until.replace(tzinfo=UTC)
        rng = random.Random(seed)
        now = (until or timezone.now()).astimezone(UTC)
        first_day = (now - timedelta(days=days - 1)).replace(hour=0, minute=0, second=0, microsecond=0)
        names, prices = _registry(first_day)
        keys = _users_and_keys(users)
        generator = CallGenerator(names, keys, rng, prices=prices, first_day=first_day, now=now)
        offset = (Call.objects.aggregate(Max("id"))["id__max"] or 0) + 1
        progress = tqdm(total=rows, unit="row", unit_scale=True, disable=no_progress, desc="calls")
        started = time.monotonic()
        with progress:
            _calls_insert_all(generator.rows(rows, offset), progress, batch)
        inserted = time.monotonic()
        self.stdout.write(f"inserted {rows} calls in {inserted - started:.1f} s; rebuilding the rollups of those days…")
        rollups_rebuild(since=first_day.date())
        self.stdout.write(f"rebuilt the rollups in {time.monotonic() - inserted:.1f} s")
        budgets = _budgets(keys, rng, now)
        votes = _votes(names, keys, rng, first_day, now)
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute(f"ANALYZE {Call._meta.db_table}, {CallRollup._meta.db_table}")
        self.stdout.write(
            f"added {rows} calls over {days} days for {len({k[0] for k in keys})} users "
            f"({sum(1 for k in keys if k[1])} keys), {budgets} budgets, {votes} votes "
            f"in {time.monotonic() - started:.1f} s"
        )


# ---------------------------------------------------------------------------- registry, users, keys


def _registry(first_day: datetime) -> tuple[dict[str, list[ModelSnap]], BillingSnapshot]:
    """Each requestable name (model or route) with its candidates in order, from the gateway's registry
    snapshot, and billing's part of it with each model priced from `first_day` on; seeds the demo
    registry if empty."""
    if not ModelEndpoint.objects.exists():
        call_command("seed_demo", stdout=io.StringIO())
    if not ModelEndpoint.objects.filter(prices__isnull=True).exists():
        provider = Provider.objects.order_by("name").first()
        ModelEndpoint.objects.get_or_create(name=UNPRICED_MODEL, defaults={"provider": provider})
    registry = registry_load()
    names = {name: [model] for name, model in sorted(registry.models.items())}
    for name, route in sorted(registry.routes.items()):
        if route.targets:
            names[name] = [model for model, _ in route.targets]
    prices = {model_id: _priced_from(rows, first_day) for model_id, rows in registry.metering.prices.items()}
    return names, replace(registry.metering, prices=prices)


def _priced_from(prices: tuple[PriceSnap, ...], start: datetime) -> tuple[PriceSnap, ...]:
    """A model's `prices` with the first one in force from `start` on when it took effect later."""
    if not prices or prices[0].effective_from <= start:
        return prices
    return (replace(prices[0], effective_from=start), *prices[1:])


def _users_and_keys(count: int) -> list[tuple[int, int | None, float]]:
    """(user id, key id or None for the playground, weight) for `count` users with 1 to 3 keys each
    (the same users and keys on a second run)."""
    User = get_user_model()
    keys = []
    for rank in range(1, count + 1):
        username = f"{FIRST_NAMES[(rank - 1) % len(FIRST_NAMES)]}.{LAST_INITIALS[(rank * 7) % len(LAST_INITIALS)]}"
        if rank > len(FIRST_NAMES):
            username += str(rank // len(FIRST_NAMES))
        user, created = User.objects.get_or_create(username=username)
        if created:
            user.set_unusable_password()
            user.save(update_fields=["password"])
        user_keys = list(ApiKey.objects.filter(user=user).order_by("id").values_list("id", flat=True))
        if not user_keys:
            for name in ("prod", "staging", "notebook")[: (1, 1, 2, 3)[rank % 4]]:
                user_keys.append(api_key_create(user=user, name=name)[0].id)
        weight = 1 / rank**1.1  # a few heavy users, a long tail of light ones
        for index, key_id in enumerate(user_keys):
            keys.append((user.id, key_id, weight * (0.7 if index == 0 else 0.3 / len(user_keys))))
        keys.append((user.id, None, weight * 0.03))  # playground calls
    return keys


# ---------------------------------------------------------------------------- calls


class CallGenerator:
    def __init__(
        self,
        names: dict[str, list[ModelSnap]],
        keys,
        rng: random.Random,
        *,
        prices: BillingSnapshot,
        first_day: datetime,
        now: datetime,
    ):
        self.rng = rng
        self.prices = prices
        self.keys = keys
        self.first_day = first_day
        self.now = now
        self.names = list(names)
        popularity = [self._popularity(name) for name in self.names]
        # Each key (and each user's playground) sticks to 1-3 names.
        self.key_names = []
        for index in range(len(keys)):
            chosen = sorted({self.names[_weighted(popularity, rng)] for _ in range(rng.choice((1, 2, 2, 3)))})
            weights = [rng.uniform(0.2, 1.0) for _ in chosen]
            if index % 5 == 2 and UNPRICED_MODEL in names and UNPRICED_MODEL not in chosen:
                chosen.append(UNPRICED_MODEL)  # a team trying a model nobody has priced yet
                weights.append(0.08)
            self.key_names.append((chosen, Sampler(weights, rng)))
        self.key_sampler = Sampler([w for _, _, w in keys], rng)
        self.outcomes = {name: [self._outcome(name, candidates) for _ in range(SHAPES_PER_NAME)]
                         for name, candidates in names.items()}  # fmt: skip
        self.outcome_rows: dict[tuple[int, int], dict[str, Any]] = {}
        hours = [0.25 + math.exp(-(((h - 14.5) / 4.2) ** 2)) for h in range(24)]
        self.hour_sampler = Sampler(hours, rng)

    def _popularity(self, name: str) -> float:
        return {"gpt-4o-mini": 6, "default": 5, "gpt-4o": 4, "coding": 3, "claude-sonnet-4": 3,
                "deepseek-chat": 2, UNPRICED_MODEL: 0.6, "demo-echo": 0.5}.get(name, 1)  # fmt: skip

    def rows(self, count: int, offset: int) -> Iterator[dict[str, Any]]:
        """`count` call rows (as `call_row` builds them) in time order, request ids numbered from `offset`."""
        days = []
        day = self.first_day
        while day <= self.now:
            trend = 0.7 + 0.6 * (day - self.first_day).days / max(1, (self.now - self.first_day).days)
            weekend = 0.45 if day.weekday() >= 5 else 1.0
            span = min(1.0, (self.now - day).total_seconds() / 86400)
            days.append((day, trend * weekend * span * self.rng.uniform(0.85, 1.15), span))
            day += timedelta(days=1)
        total = sum(w for _, w, _ in days)
        counts = [int(count * w / total) for _, w, _ in days]
        counts[-1] += count - sum(counts)
        rng = self.rng
        number = offset
        for (day, _, span), n in zip(days, counts, strict=True):
            limit = span * 86400
            seconds = []
            for _ in range(n):
                second = self.hour_sampler() * 3600 + rng.random() * 3600
                seconds.append(second if second < limit else rng.random() * limit)
            seconds.sort()
            for second in seconds:
                k = self.key_sampler()
                user_id, key_id, _ = self.keys[k]
                key_names, name_sampler = self.key_names[k]
                name = key_names[name_sampler()]
                outcome = self.outcomes[name][int(rng.random() * SHAPES_PER_NAME)]
                created_at = day + timedelta(seconds=second)
                yield {
                    **self._outcome_row(outcome, created_at),
                    "created_at": created_at,
                    "request_id": f"gen-{number:012d}",
                    "user_id": user_id,
                    "api_key_id": key_id,
                    "source": "api" if key_id else "playground",
                }
                number += 1

    def _outcome_row(self, outcome: CallOutcome, at: datetime) -> dict[str, Any]:
        """`call_row` of a pooled outcome at time `at`, built once per outcome and price in force: a row
        depends on its time only through that price, and the caller sets who called, when and the id."""
        price = self.prices.price_at(outcome.model, at) if outcome.model else None
        key = (id(outcome), id(price))
        row = self.outcome_rows.get(key)
        if row is None:
            row = self.outcome_rows[key] = call_row(replace(outcome, created_at=at))
        return row

    def _outcome(self, name: str, candidates: list[ModelSnap]) -> CallOutcome:
        """One plausible outcome of a request for `name`; who called and when are set per row."""
        rng = self.rng
        draw = rng.random()
        prompt = max(5, int(rng.lognormvariate(math.log(900), 0.9)))
        completion = max(1, int(rng.lognormvariate(math.log(220), 0.75)))
        stream = rng.random() < 0.55
        attempts = []
        model = None
        status, http, error_code = "ok", 200, ""
        latency = 0
        if draw < 0.015:
            status, http = "rejected", rng.choice((429, 429, 402))
            error_code = "rate_limit_exceeded" if http == 429 else "budget_exceeded"
            latency = rng.randint(1, 6)
        elif draw < 0.035:
            status, http, error_code = "error", 502, "all_candidates_failed"
            for candidate in candidates:
                took = int(rng.uniform(80, 5000))
                attempts.append(_attempt(candidate.name, "error", rng.choice((500, 502, 503, 504)), took))
                latency += took
        else:
            for candidate in candidates[:-1]:
                roll = rng.random()
                if roll < 0.06:
                    took = int(rng.uniform(100, 8000))
                    attempts.append(_attempt(candidate.name, "error", rng.choice((429, 500, 503, 504)), took))
                    latency += took
                elif roll < 0.08:
                    attempts.append({"model": candidate.name, "outcome": "skipped", "status": None,
                                     "latency_ms": 0, "reason": "circuit open"})  # fmt: skip
                else:
                    model = candidate
                    break
            model = model or candidates[-1]
            base, per_token = SPEED.get(model.name, (500, 10))
            took = int((base + completion * per_token) * rng.lognormvariate(0, 0.35))
            attempts.append(_attempt(model.name, "ok", 200, took))
            latency += took
            if stream and rng.random() < 0.02:
                status, error_code = "error", "upstream_stream_failed"
        # A stream that broke off, or (rarely) whose client left early, ends without a usage chunk: the
        # tokens are estimated from the request and the streamed text, as the gateway does.
        estimated = model is not None and (status == "error" or (stream and rng.random() < 0.01))
        usage = None
        if model is not None and not estimated:
            cached = int(prompt * rng.uniform(0.3, 0.9)) if rng.random() < 0.25 else 0
            usage = {
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "prompt_tokens_details": {"cached_tokens": cached},
            }
        return CallOutcome(
            snapshot_part=self.prices,
            request_id="",
            created_at=self.first_day,
            source="",
            user_id=None,
            api_key_id=None,
            requested=name,
            model=model,
            status=status,
            http_status=http,
            error_code=error_code,
            stream=stream,
            messages=[{"role": "user", "content": "x" * (prompt * CHARS_PER_TOKEN)}] if estimated else [],
            usage=usage_parse(usage),
            completion_chars=completion * CHARS_PER_TOKEN if estimated else 0,
            latency_ms=latency,
            ttft_ms=int(latency * rng.uniform(0.12, 0.35)) if stream and model else None,
            overhead_ms=rng.uniform(0.3, 2.5),
            attempts=attempts,
            client_disconnected=estimated and status == "ok",
        )


def _attempt(model: str, outcome: str, status: int, latency_ms: int) -> dict:
    reason = "ok" if outcome == "ok" else f"HTTP {status}"
    return {"model": model, "outcome": outcome, "status": status, "latency_ms": latency_ms, "reason": reason}


def _weighted(weights: list[float], rng: random.Random) -> int:
    return rng.choices(range(len(weights)), weights=weights)[0]


# ---------------------------------------------------------------------------- writer


def _calls_insert_all(rows: Iterator[dict[str, Any]], progress: tqdm, batch: int) -> None:
    """Store the rows through `calls_insert`, `batch` at a time, in one bulk load."""
    with _bulk_load():
        while chunk := list(islice(rows, batch)):
            calls_insert(chunk)
            progress.update(len(chunk))


@contextmanager
def _bulk_load() -> Iterator[None]:
    """One transaction for the whole load; on PostgreSQL, one set up for bulk loading.

    Into an empty table (a fresh demo or benchmark database), the secondary indexes are dropped first
    and built once at the end, which is several times faster than maintaining them row by row; the
    transaction makes that invisible (and undone on failure). Readers of the table wait meanwhile.
    """
    with transaction.atomic():
        if connection.vendor != "postgresql":
            yield
            return
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL synchronous_commit TO OFF")
            cursor.execute("SET LOCAL maintenance_work_mem = '512MB'")
            deferred_indexes = []
            if not Call.objects.exists():
                cursor.execute(
                    "SELECT i.indexrelid::regclass::text, pg_get_indexdef(i.indexrelid) FROM pg_index i "
                    "WHERE i.indrelid = %s::regclass "
                    "AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid)",
                    [Call._meta.db_table],
                )
                deferred_indexes = cursor.fetchall()
                for name, _ in deferred_indexes:
                    cursor.execute(f"DROP INDEX {name}")
        yield
        with connection.cursor() as cursor:
            for _, definition in deferred_indexes:
                cursor.execute(definition)


# ---------------------------------------------------------------------------- budgets and votes


def _budgets(keys, rng: random.Random, now: datetime) -> int:
    """Monthly budgets for the heaviest users and a few keys, with this month's spend as their running total."""
    month = now.date().replace(day=1)
    month_start = datetime.combine(month, datetime.min.time(), tzinfo=UTC)
    day_rows = CallRollup.objects.filter(period=CallRollup.Period.DAY, bucket_start__gte=month_start)
    created = 0
    user_ids = list(dict.fromkeys(user_id for user_id, _, _ in keys))[:8]
    key_ids = [key_id for _, key_id, _ in keys if key_id][1:12:3]
    targets = [("user", user_id) for user_id in user_ids] + [("api_key", key_id) for key_id in key_ids]
    for kind, target_id in targets:
        if Budget.objects.filter(**{f"{kind}_id": target_id}).exists():
            continue
        spent_pusd = day_rows.filter(**{f"{kind}_id": target_id}).aggregate(s=Sum("cost_pusd"))["s"] or 0
        spent = (Decimal(int(spent_pusd)) / Decimal(10**12)).quantize(Decimal("1e-6"))
        limit = max(Decimal(5), (spent * Decimal(str(rng.uniform(0.9, 2.6)))).quantize(Decimal(1)))
        Budget.objects.create(
            **{f"{kind}_id": target_id},
            limit_usd=limit,
            soft_threshold_pct=rng.choice((None, 75, 80, 90)),
            period_start=month,
            spent_usd=spent,
        )
        created += 1
    return created


def _votes(names, keys, rng: random.Random, first_day: datetime, now: datetime) -> int:
    """Playground compare-mode votes: some models are preferred more often than others."""
    models = [c for candidates in names.values() if len(candidates) == 1 for c in candidates]
    if len(models) < 2:
        return 0
    quality = {c.id: rng.uniform(0.5, 3.0) for c in models}
    user_ids = list(dict.fromkeys(user_id for user_id, _, _ in keys))
    seconds = (now - first_day).total_seconds()
    votes = []
    for number in range(min(600, 40 + len(user_ids) * 6)):
        compared = rng.sample(models, 2)
        weights = [quality[c.id] for c in compared]
        chosen = compared[_weighted(weights, rng)]
        request_ids = [f"gen-vote-{number}-{i}" for i in range(len(compared))]
        vote = PreferenceVote(
            user_id=rng.choice(user_ids),
            compared=[c.name for c in compared],
            chosen=chosen.name,
            chosen_model_id=chosen.id,
            request_ids=request_ids,
            comparison_key=",".join(sorted(request_ids)),
        )
        vote.when = first_day + timedelta(seconds=rng.random() * seconds)
        votes.append(vote)
    existing = set(PreferenceVote.objects.values_list("user_id", "comparison_key"))
    votes = [v for v in votes if (v.user_id, v.comparison_key) not in existing]
    PreferenceVote.objects.bulk_create(votes)
    for vote in votes:  # created_at is auto_now_add: spread the votes over the range afterwards
        vote.created_at = vote.updated_at = vote.when
    PreferenceVote.objects.bulk_update(votes, ["created_at", "updated_at"], batch_size=500)
    return len(votes)
