"""The dashboard tests' data set and the plain-Python reading of it, shared by tests/test_dashboard*.py.

`world` holds users (one staff), API keys, models (one of kind embeddings) and a route; `calls` stores
700 varied calls (some of them embeddings calls) through
the recorder's write path (`call_rows_store`, which maintains the rollups), in several batches and with
a replayed batch. `matching`, `cost_of` and `is_fallback` read the `Call` rows themselves, never the
rollups or billing/dashboard/'s SQL. The fixtures are registered for every test module by tests/conftest.py.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, time, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import orjson
import pytest
from django.test import Client
from django.utils import timezone

from billing.budgets import period_start_for
from billing.calls import call_rows_store
from billing.dashboard.access import CallFilters
from billing.models import Budget, Call
from billing.pricing import prompt_tokens_bound
from routing.models import PreferenceVote
from routing.services import api_key_create
from tests.factories import model_create, route_create, spend_viewers_group, user_create

# ---------------------------------------------------------------------------- the data set


def call_row(
    *,
    at: datetime | str,
    request_id: str,
    requested: str,
    user_id: int | None = None,
    api_key_id: int | None = None,
    model=None,
    status: str = "ok",
    attempts: list | None = None,
    prompt: int = 0,
    cached: int = 0,
    cache_write: int = 0,
    completion: int = 0,
    estimated: bool = False,
    cost: Decimal | str | None = Decimal(0),
    saved: Decimal | str | None = None,
    latency_ms: int = 100,
    ttft_ms: int | None = None,
    stream: bool = False,
    kind: str = "chat",
) -> dict:
    """A row as the recorder hands it to `call_rows_store` (a dict of Call's fields, `*_id` for keys)."""
    return {
        "created_at": at,
        "request_id": request_id,
        "user_id": user_id,
        "api_key_id": api_key_id,
        "requested": requested,
        "model_id": model.id if model else None,
        "provider_id": model.provider_id if model else None,
        "kind": kind,
        "status": status,
        "http_status": {"ok": 200, "cache_hit": 200, "rejected": 429}.get(status, 502),
        "error_code": "" if status in ("ok", "cache_hit") else "some_error",
        "stream": stream,
        "prompt_tokens": prompt,
        "cached_tokens": cached,
        "cache_write_tokens": cache_write,
        "completion_tokens": completion,
        "usage_estimated": estimated,
        "cost_usd": cost,
        "unpriced": cost is None,
        "saved_usd": saved,
        "latency_ms": latency_ms,
        "ttft_ms": ttft_ms,
        "overhead_ms": 0.5,
        "attempt_count": sum(1 for a in attempts or [] if a["outcome"] != "skipped"),
        "attempts": attempts or [],
        "client_disconnected": False,
        "source": "api" if api_key_id else "playground",
        "reservations": [],
    }


def budget_for(*, limit: str, spent: str = "0", **owner) -> Budget:
    """A monthly budget of `limit` USD on `owner` (user= or api_key=), `spent` already spent this month."""
    budget = Budget.objects.create(limit_usd=Decimal(limit), **owner)
    Budget.objects.filter(pk=budget.pk).update(spent_usd=Decimal(spent), period_start=period_start_for(timezone.now()))
    return budget


def worst_case_usd(body: dict, *, output_tokens: int, usd_per_mtok: Decimal | int) -> Decimal:
    """A budget's worst case for `body` sent as compact JSON (orjson's, httpx's `json=`), one price for all tokens."""
    prompt = prompt_tokens_bound(body=body, body_size=len(orjson.dumps(body)))
    return (prompt + output_tokens) * Decimal(usd_per_mtok) / 1_000_000


def attempt(model: str, outcome: str, latency_ms: int = 10) -> dict:
    status = {"ok": 200, "error": 503, "skipped": None}[outcome]
    return {"model": model, "outcome": outcome, "status": status, "latency_ms": latency_ms, "reason": outcome}


LATENCIES = [0, 1, 49, 50, 51, 100, 101, 999, 1000, 1001, 59_999, 60_000, 120_000, 120_001, 900_000]


def random_rows(world: dict, rng: random.Random, count: int, now: datetime, start_number: int = 0) -> list[dict]:
    """`count` varied rows over the last 40 days: every status, fallbacks, unpriced and estimated calls,
    values on histogram bounds, calls on hour and day boundaries, with and without user or key."""
    alice, bob, carol = world["alice"], world["bob"], world["carol"]
    who = [
        (alice.id, world["alice_prod"].id),
        (alice.id, world["alice_dev"].id),
        (alice.id, None),
        (bob.id, world["bob_key"].id),
        (carol.id, world["carol_key"].id),
        (carol.id, None),
        (None, None),
    ]
    m = world["models"]
    rows = []
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    boundaries = [
        midnight,
        midnight - timedelta(microseconds=1),
        midnight - timedelta(days=7),
        midnight.replace(hour=1),
    ]
    for number in range(start_number, start_number + count):
        if number % 53 == 0:
            at = min(boundaries[(number // 53) % len(boundaries)], now)
        else:
            at = now - timedelta(seconds=rng.randint(0, 40 * 86400), microseconds=rng.randint(0, 999_999))
        user_id, key_id = rng.choice(who)
        requested = rng.choice(["gpt-4o", "gpt-4o", "mini", "local", "smart", "smart", "no-such-model"])
        kind = rng.random()
        row = dict(
            at=at.isoformat() if number % 7 == 0 else at,  # spooled rows carry ISO strings
            request_id=f"req-{number:06d}",
            requested=requested,
            user_id=user_id,
            api_key_id=key_id,
            latency_ms=rng.choice(LATENCIES) if rng.random() < 0.3 else rng.randint(0, 30_000),
            stream=rng.random() < 0.5,
        )
        answering = {"gpt-4o": m["gpt-4o"], "mini": m["mini"], "local": m["local"], "smart": m["gpt-4o"]}.get(requested)
        if requested == "no-such-model" or kind < 0.05:
            rows.append(call_row(**row, status="rejected", cost=Decimal(0)))
            continue
        if kind < 0.12:
            names = ["gpt-4o", "mini"] if requested == "smart" else [requested]
            rows.append(call_row(**row, status="error", attempts=[attempt(n, "error") for n in names], cost=Decimal(0)))
            continue
        chain = [attempt(answering.name, "ok")]
        if requested == "smart" and kind < 0.45:
            answering = m["mini"]
            first = "error" if kind < 0.3 else "skipped"
            chain = [attempt("gpt-4o", first), attempt("mini", "ok")]
            if kind < 0.16:
                chain = [attempt("gpt-4o", "skipped"), attempt("local", "error"), attempt("mini", "ok")]
        prompt = rng.randint(1, 5000)
        completion = rng.randint(0, 2000)
        if answering.name == "local":
            cost = None
        elif rng.random() < 0.02:
            cost = Decimal("123.456789012345")
        else:
            cost = Decimal(rng.randint(0, 10**10)) / Decimal(10**12)
        if number % 5 == 0 and cost is not None:
            cost = str(cost)  # spooled rows carry strings
        status = "cache_hit" if kind > 0.97 else ("error" if kind > 0.94 else "ok")
        saved = None
        if status == "cache_hit":  # a hit costs nothing and saved what the replayed call cost
            saved, cost = cost, Decimal(0)
        rows.append(
            call_row(
                **row,
                model=answering,
                status=status,
                attempts=[] if status == "cache_hit" else chain,
                prompt=prompt,
                cached=(cached := rng.randint(0, prompt) if rng.random() < 0.3 else 0),
                cache_write=(prompt - cached) // 3 if prompt % 4 == 0 else 0,  # no draw: the seeds' rows stay
                completion=completion,
                estimated=status == "error" or rng.random() < 0.03,
                cost=cost,
                saved=saved,
                ttft_ms=rng.choice(LATENCIES + [None, None, rng.randint(0, 5000)]),
            )
        )
        if number % 11 == 3 and status == "ok":  # some calls are embeddings: input tokens only, no stream
            rows[-1] |= embedding_row(world["embed"], prompt)
    return rows


def embedding_row(model, prompt: int) -> dict:
    """What makes a stored call row an embeddings call of `model` (priced at its input price, exactly)."""
    return {
        "kind": "embeddings",
        "requested": model.name,
        "model_id": model.id,
        "provider_id": model.provider_id,
        "stream": False,
        "cached_tokens": 0,
        "completion_tokens": 0,
        "ttft_ms": None,
        "attempts": [attempt(model.name, "ok")],
        "attempt_count": 1,
        "cost_usd": Decimal(prompt) * Decimal("0.02") / 1_000_000,
        "unpriced": False,
    }


@pytest.fixture
def world(db):
    """Users (one staff with the spend permission), keys, models, a route; no calls yet."""
    root = user_create("root", is_staff=True)
    root.groups.add(spend_viewers_group())
    alice, bob, carol = user_create("alice"), user_create("bob"), user_create("carol")
    models = {
        "gpt-4o": model_create(name="gpt-4o", price=(2.5, 10)),
        "mini": model_create(name="mini", price=(0.15, 0.6)),
        "local": model_create(name="local"),
    }
    route_create("smart", [models["gpt-4o"], models["mini"]])
    return {
        "embed": model_create(name="embed", kind="embeddings", price=("0.02", 0)),
        "root": root,
        "alice": alice,
        "bob": bob,
        "carol": carol,
        "alice_prod": api_key_create(user=alice, name="prod")[0],
        "alice_dev": api_key_create(user=alice, name="dev")[0],
        "bob_key": api_key_create(user=bob, name="bob")[0],
        "carol_key": api_key_create(user=carol, name="carol")[0],
        "models": models,
    }


@pytest.fixture
def calls(world):
    """700 calls stored in three batches plus a replayed one; returns the Call rows."""
    rng = random.Random(20240611)
    now = timezone.now()
    rows = random_rows(world, rng, 700, now)
    call_rows_store(rows[:250])
    call_rows_store(rows[250:600])
    call_rows_store(rows[500:])  # 100 rows replayed from a spool: stored (and counted) once
    votes = []
    for number in range(40):
        chosen = rng.choice(list(world["models"].values()) + [None])
        # Odd votes compare a route and a model through stored calls (the call tells which model
        # answered the route's column); even ones name two models, with no call stored.
        compared, request_ids = ["gpt-4o", "mini"], [f"v{number}a", f"v{number}b"]
        if number % 2:
            compared, request_ids = ["smart", "local"], [rows[number]["request_id"], rows[number + 1]["request_id"]]
        votes.append(
            PreferenceVote(
                user=rng.choice([world["alice"], world["bob"], world["carol"]]),
                compared=compared,
                chosen=chosen.name if chosen else "smart",
                chosen_model=chosen,
                request_ids=request_ids,
                comparison_key=",".join(sorted(request_ids)),
            )
        )
    PreferenceVote.objects.bulk_create(votes)
    for vote in votes:
        vote.created_at = now - timedelta(days=rng.randint(0, 40), hours=rng.randint(0, 23))
    PreferenceVote.objects.bulk_update(votes, ["created_at"])
    assert Call.objects.count() == 700
    return list(Call.objects.select_related("model", "user"))


# ---------------------------------------------------------------------------- the raw computations


def days_range(first_days_ago: int, days: int, tz: str = "UTC") -> tuple[datetime, datetime]:
    """Whole days of the zone `tz` (midnight to midnight there), as UTC datetimes."""
    zone = ZoneInfo(tz)
    today = timezone.now().astimezone(zone).date()
    first = today - timedelta(days=first_days_ago)
    start = datetime.combine(first, time.min, tzinfo=zone).astimezone(UTC)
    return start, datetime.combine(first + timedelta(days=days), time.min, tzinfo=zone).astimezone(UTC)


def matching(calls: list[Call], f: CallFilters) -> list[Call]:
    return [
        c
        for c in calls
        if f.start <= c.created_at < f.end
        and (f.user_id is None or c.user_id == f.user_id)
        and (f.api_key_id is None or c.api_key_id == f.api_key_id)
        and (f.model_id is None or c.model_id == f.model_id)
        and (f.requested is None or c.requested == f.requested)
        and (f.kind is None or c.kind == f.kind)
    ]


def is_fallback(call: Call) -> bool:
    outcomes = [a["outcome"] for a in call.attempts]
    return "ok" in outcomes and outcomes.index("ok") > 0


def cost_of(calls: list[Call]) -> Decimal:
    return sum((c.cost_usd for c in calls if c.cost_usd is not None), Decimal(0))


def make_filters(days=(29, 30), hours=None, **dims) -> CallFilters:
    if hours:
        end = timezone.now().astimezone(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=hours[1])
        return CallFilters(start=end - timedelta(hours=hours[0]), end=end, **dims)
    start, end = days_range(*days, tz=dims.get("tz", "UTC"))
    return CallFilters(start=start, end=end, **dims)


# ---------------------------------------------------------------------------- clients


def client_for(user) -> Client:
    """A test client logged in as `user`."""
    client = Client()
    client.force_login(user)
    return client
