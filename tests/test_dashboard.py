"""The spend dashboard: every number it shows equals a direct computation over the raw call rows.

The data set (`world`, `calls`) is tests/billing_fixtures.py's. The expected numbers are computed
here in plain Python from the `Call` rows themselves, never from the rollups or billing/dashboard/'s SQL.
"""

from __future__ import annotations

import json
import math
import re
from collections import defaultdict
from dataclasses import replace
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from fractions import Fraction
from urllib.parse import parse_qsl
from zoneinfo import ZoneInfo

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from django.utils.html import escape

from billing.calls import call_rows_store
from billing.dashboard.access import CallFilters
from billing.dashboard.aggregates import (
    Totals,
    bucket_starts,
    call_slices,
    call_totals,
    requested_stats,
    spend_series,
    user_spend,
)
from billing.dashboard.document import dashboard_data
from billing.dashboard.model_stats import model_stats
from billing.dashboard.recent import recent_calls
from billing.dashboard.votes import vote_results
from billing.models import HISTOGRAM_BOUNDS_MS, Budget, Call
from billing.money import usd_json
from routing.models import ApiKey, ModelEndpoint, PreferenceVote
from routing.services import api_key_create, api_key_revoke
from tests.billing_fixtures import call_row, client_for, cost_of, is_fallback, make_filters, matching
from tests.factories import spend_viewers_group, user_create

DATA_URL = "/dashboard/data.json"
PAGE_URL = "/dashboard/"
HOUR = timedelta(hours=1)

# ---------------------------------------------------------------------------- the raw computations


def nearest_rank_bound(values: list[int], percent: int) -> int | None:
    """The bound of the histogram bucket holding the nearest-rank percentile of `values`."""
    if not values:
        return None
    value = sorted(values)[math.ceil(Fraction(len(values) * percent, 100)) - 1]
    return next((bound for bound in HISTOGRAM_BOUNDS_MS if value <= bound), None)


def totals_for(*, filters: CallFilters) -> Totals:
    """The totals the dashboard shows for `filters`, read as the dashboard reads them."""
    return call_totals(slices=call_slices(filters=filters))


def rate(part: int, whole: int) -> float:
    return round(part / whole, 6) if whole else 0.0


def model_name(model_id: int) -> str:
    return ModelEndpoint.objects.get(pk=model_id).name


def raw_vote_results(calls: list[Call], votes: list[PreferenceVote], f: CallFilters) -> list[tuple[int, int, int]]:
    """(model id, wins, comparisons) per model from the raw votes and calls, best win rate first."""
    answered = {c.request_id: c.model_id for c in calls if c.model_id}
    named = dict(ModelEndpoint.objects.values_list("name", "id"))
    wins, seen = defaultdict(int), defaultdict(int)
    for v in votes:
        if not (f.start <= v.created_at < f.end) or (f.user_id is not None and v.user_id != f.user_id):
            continue
        columns = {answered.get(r) or named.get(n) for n, r in zip(v.compared, v.request_ids, strict=True)}
        for m in (columns | {v.chosen_model_id}) - {None}:
            seen[m] += 1
            wins[m] += m == v.chosen_model_id
    results = [(m, wins[m], n) for m, n in seen.items() if f.model_id is None or m == f.model_id]
    return sorted(results, key=lambda r: (-rate(r[1], r[2]), -r[2], r[0]))


def raw_document(calls: list[Call], votes: list[PreferenceVote], f: CallFilters, *, staff: bool) -> dict:
    """The parts of the JSON document that come from calls and votes, computed from the raw rows."""
    rows = matching(calls, f)
    length = f.end - f.start
    before = [c for c in matching(calls, replace(f, start=f.start - length, end=f.start))]
    by_model = defaultdict(list)
    for c in rows:
        if c.model_id:
            by_model[c.model_id].append(c)
    names = {m.id: m.name for c in rows if c.model for m in [c.model]}
    names |= {v.chosen_model_id: v.chosen_model.name for v in votes if v.chosen_model_id}

    zone = ZoneInfo(f.tz)
    local_midnights = all(b.astimezone(zone).time() == time.min for b in (f.start, f.end))
    daily = f.end - f.start > timedelta(days=2) and local_midnights
    starts = []
    at = f.start
    while at < f.end:
        starts.append(at.astimezone(zone) if daily else at)
        # the next midnight of the zone (23 or 25 hours away across a daylight-saving change)
        at = datetime.combine(at.astimezone(zone).date() + timedelta(days=1), time.min, zone) if daily else at + HOUR
    ends = [*starts[1:], f.end]
    series = []
    for model_id, model_calls in by_model.items():
        values = [cost_of([c for c in model_calls if s <= c.created_at < e]) for s, e in zip(starts, ends, strict=True)]
        series.append((-sum(values), model_id, values))
    series.sort(key=lambda item: (item[0], item[1]))

    models = []
    for model_id, mc in by_model.items():
        errors = sum(c.status == "error" for c in mc)
        fallbacks = sum(is_fallback(c) for c in mc)
        ttfts = [c.ttft_ms for c in mc if c.ttft_ms is not None]
        models.append(
            (
                -cost_of(mc),
                -len(mc),
                model_id,
                {
                    "model": names[model_id],
                    "calls": len(mc),
                    "spend_usd": usd_json(cost_of(mc)),
                    "prompt_tokens": sum(c.prompt_tokens for c in mc),
                    "completion_tokens": sum(c.completion_tokens for c in mc),
                    "error_calls": errors,
                    "error_rate": rate(errors, len(mc)),
                    "fallback_calls": fallbacks,
                    "fallback_rate": rate(fallbacks, len(mc)),
                    "latency_p50_ms": nearest_rank_bound([c.latency_ms for c in mc], 50),
                    "latency_p95_ms": nearest_rank_bound([c.latency_ms for c in mc], 95),
                    "ttft_p50_ms": nearest_rank_bound(ttfts, 50),
                    "ttft_calls": len(ttfts),
                },
            )
        )
    models.sort(key=lambda item: item[:3])

    by_requested = defaultdict(list)
    for c in rows:
        by_requested[c.requested].append(c)
    requested = sorted(
        (
            {
                "requested": name,
                "calls": len(rc),
                "error_calls": sum(c.status == "error" for c in rc),
                "error_rate": rate(sum(c.status == "error" for c in rc), len(rc)),
                "fallback_calls": sum(is_fallback(c) for c in rc),
                "fallback_rate": rate(sum(is_fallback(c) for c in rc), len(rc)),
            }
            for name, rc in by_requested.items()
        ),
        key=lambda r: (-r["calls"], r["requested"]),
    )

    results = raw_vote_results(calls, votes, f)

    errors = sum(c.status == "error" for c in rows)
    fallbacks = sum(is_fallback(c) for c in rows)
    document = {
        "totals": {
            "spend_usd": usd_json(cost_of(rows)),
            "calls": len(rows),
            "prompt_tokens": sum(c.prompt_tokens for c in rows),
            "cached_tokens": sum(c.cached_tokens for c in rows),
            "cache_write_tokens": sum(c.cache_write_tokens for c in rows),
            "completion_tokens": sum(c.completion_tokens for c in rows),
            "error_calls": errors,
            "error_rate": rate(errors, len(rows)),
            "fallback_calls": fallbacks,
            "fallback_rate": rate(fallbacks, len(rows)),
            "rejected_calls": sum(c.status == "rejected" for c in rows),
            "cache_hit_calls": sum(c.status == "cache_hit" for c in rows),
            "cache_hit_rate": rate(sum(c.status == "cache_hit" for c in rows), len(rows)),
            "saved_usd": usd_json(sum((c.saved_usd for c in rows if c.saved_usd is not None), Decimal(0))),
            "unpriced_calls": sum(c.cost_usd is None for c in rows),
            "estimated_calls": sum(c.usage_estimated for c in rows),
            "by_kind": {
                kind: {
                    "spend_usd": usd_json(cost_of([c for c in rows if c.kind == kind])),
                    "calls": sum(c.kind == kind for c in rows),
                    "prompt_tokens": sum(c.prompt_tokens for c in rows if c.kind == kind),
                    "completion_tokens": sum(c.completion_tokens for c in rows if c.kind == kind),
                }
                for kind in ("chat", "embeddings")
            },
        },
        "spend_over_time": {
            "bucket": "day" if daily else "hour",
            "starts": [s.isoformat() for s in starts],
            "series": [{"model": names[m], "spend_usd": [usd_json(v) for v in values]} for _, m, values in series],
        },
        "previous_totals": {
            "start": (f.start - length).isoformat(),
            "spend_usd": usd_json(cost_of(before)),
            "calls": len(before),
            "prompt_tokens": sum(c.prompt_tokens for c in before),
            "completion_tokens": sum(c.completion_tokens for c in before),
        },
        "models": [entry for *_, entry in models],
        "requested": requested,
        "votes": [{"model": model_name(m), "wins": w, "comparisons": n, "win_rate": rate(w, n)} for m, w, n in results],
    }
    in_bucket = [[c for c in rows if s <= c.created_at < e] for s, e in zip(starts, ends, strict=True)]
    document["traffic_over_time"] = {
        "bucket": "day" if daily else "hour",
        "starts": [s.isoformat() for s in starts],
        "calls": [len(b) for b in in_bucket],
        "prompt_tokens": [sum(c.prompt_tokens for c in b) for b in in_bucket],
        "completion_tokens": [sum(c.completion_tokens for c in b) for b in in_bucket],
    }
    by_key = defaultdict(list)
    for c in rows:
        by_key[c.api_key_id or 0].append(c)
    ranked_keys = sorted(by_key.items(), key=lambda item: (-cost_of(item[1]), -len(item[1]), item[0]))
    keys = {k.pk: k for k in ApiKey.objects.select_related("user")}

    def key_label(key_id: int) -> str:
        if not key_id:
            return "no key (playground)"
        key = keys[key_id]
        return f"{key.user.username}: {key.name} ({key.prefix}…)" if staff else f"{key.name} ({key.prefix}…)"

    document["spend_by_key"] = [
        {"key": key_label(kid), "calls": len(kc), "spend_usd": usd_json(cost_of(kc))} for kid, kc in ranked_keys[:10]
    ]
    if len(ranked_keys) > 10:
        rest = [c for _, kc in ranked_keys[10:] for c in kc]
        document["spend_by_key"].append(
            {"key": f"{len(ranked_keys) - 10} other keys", "calls": len(rest), "spend_usd": usd_json(cost_of(rest))}
        )
    if staff:
        by_user = defaultdict(list)
        for c in rows:
            by_user[c.user_id or 0].append(c)
        ranked = sorted(by_user.items(), key=lambda item: (-cost_of(item[1]), -len(item[1]), item[0]))
        usernames = {c.user_id: c.user.username for c in rows if c.user_id}
        entries = [
            {"user": usernames.get(uid, "no user"), "calls": len(uc), "spend_usd": usd_json(cost_of(uc))}
            for uid, uc in ranked[:10]
        ]
        if len(ranked) > 10:
            rest = [c for _, uc in ranked[10:] for c in uc]
            entries.append(
                {"user": f"{len(ranked) - 10} other users", "calls": len(rest), "spend_usd": usd_json(cost_of(rest))}
            )
        document["spend_by_user"] = entries
    return document


def filter_cases(world) -> list[tuple[str, dict]]:
    m = world["models"]
    return [
        ("30 days", {}),
        ("today (hourly)", {"days": (0, 1)}),
        ("yesterday and today (hourly)", {"days": (1, 2)}),
        ("3 days (daily)", {"days": (2, 3)}),
        ("40 days", {"days": (40, 41)}),
        ("user", {"user_id": world["alice"].id}),
        ("key", {"api_key_id": world["alice_prod"].id}),
        ("model", {"model_id": m["mini"].id}),
        ("unpriced model", {"model_id": m["local"].id}),
        ("route", {"requested": "smart"}),
        ("user + route + model", {"user_id": world["carol"].id, "requested": "smart", "model_id": m["mini"].id}),
        ("no calls", {"days": (400, 3)}),
        ("hours, not whole days", {"hours": (30, 7)}),
        ("4 days, not whole days (hourly: day rows cannot split a day)", {"hours": (100, 7)}),
        (
            "40 days in New York (days from hour rows, across the end of daylight saving)",
            {"days": (40, 41), "tz": "America/New_York"},
        ),
        ("7 days in Tokyo", {"days": (6, 7), "tz": "Asia/Tokyo"}),
        ("today in Tokyo (hourly)", {"days": (0, 1), "tz": "Asia/Tokyo"}),
        ("user in Los Angeles", {"user_id": world["alice"].id, "tz": "America/Los_Angeles"}),
        ("embeddings calls", {"kind": "embeddings"}),
        ("chat calls of a user, hourly", {"kind": "chat", "user_id": world["alice"].id, "hours": (30, 7)}),
    ]


# ---------------------------------------------------------------------------- dashboard reads = raw rows


def test_every_chart_and_total_of_the_json_document_equals_the_raw_rows(world, calls):
    votes = list(PreferenceVote.objects.select_related("chosen_model"))
    for name, case in filter_cases(world):
        for staff in (True, False):
            f = make_filters(**case)
            document = dashboard_data(filters=f, all_users=staff)
            expected = raw_document(calls, votes, f, staff=staff)
            for part, value in expected.items():
                assert document[part] == value, (name, staff, part)
            assert ("spend_by_user" in document) is staff


def test_the_data_set_covers_what_the_charts_show(world, calls):
    f = make_filters(days=(40, 41))
    rows = matching(calls, f)
    statuses = {c.status for c in rows}
    assert statuses == {"ok", "error", "rejected", "cache_hit"}
    assert sum(is_fallback(c) for c in rows) > 20
    assert sum(c.cost_usd is None for c in rows) > 10
    assert any(c.latency_ms > HISTOGRAM_BOUNDS_MS[-1] for c in rows)
    assert any(c.created_at.hour == 0 and c.created_at.minute == 0 and c.created_at.second == 0 for c in rows)
    totals = totals_for(filters=f)
    assert totals.calls == len(rows) == 700
    assert totals.cost_usd == cost_of(rows) and totals.cost_usd > Decimal(100)
    assert isinstance(totals.cost_usd, Decimal)


def test_totals_per_filter_equal_the_raw_rows(world, calls):
    for name, case in filter_cases(world):
        f = make_filters(**case)
        rows = matching(calls, f)
        totals = totals_for(filters=f)
        assert totals.calls == len(rows), name
        assert totals.cost_usd == cost_of(rows), name
        assert totals.prompt_tokens == sum(c.prompt_tokens for c in rows), name
        assert totals.fallback_calls == sum(is_fallback(c) for c in rows), name
        assert totals.unpriced_calls == sum(c.unpriced for c in rows), name
        assert totals.error_rate == rate(sum(c.status == "error" for c in rows), len(rows)), name


def test_spend_series_uses_hours_up_to_two_days_and_days_beyond(world, calls):
    today = make_filters(days=(0, 1))
    assert today.bucket == "hour" and len(bucket_starts(filters=today)) == 24
    two_days = make_filters(days=(1, 2))
    assert two_days.bucket == "hour" and len(bucket_starts(filters=two_days)) == 48
    three = make_filters(days=(2, 3))
    assert three.bucket == "day" and len(bucket_starts(filters=three)) == 3
    series = spend_series(filters=today)
    rows = matching(calls, today)
    for model_id, values in series.by_model.items():
        for start, value in zip(series.starts, values, strict=True):
            in_hour = [c for c in rows if c.model_id == model_id and start <= c.created_at < start + timedelta(hours=1)]
            assert value == cost_of(in_hour)


def test_model_stats_percentiles_are_nearest_rank_bucket_bounds(world, calls):
    f = make_filters(days=(40, 41))
    for stats in model_stats(filters=f):
        rows = [c for c in matching(calls, f) if c.model_id == stats.model_id]
        assert stats.latency_p50_ms == nearest_rank_bound([c.latency_ms for c in rows], 50)
        assert stats.latency_p95_ms == nearest_rank_bound([c.latency_ms for c in rows], 95)
        assert stats.ttft_p50_ms == nearest_rank_bound([c.ttft_ms for c in rows if c.ttft_ms is not None], 50)
        assert sum(stats.latency_counts) == len(rows)


def test_requested_user_and_vote_breakdowns_equal_the_raw_rows(world, calls):
    f = make_filters(days=(40, 41))
    rows = matching(calls, f)
    for entry in requested_stats(slices=call_slices(filters=f)):
        mine = [c for c in rows if c.requested == entry.requested]
        assert (entry.calls, entry.error_calls, entry.fallback_calls) == (
            len(mine),
            sum(c.status == "error" for c in mine),
            sum(is_fallback(c) for c in mine),
        )
    spends = user_spend(slices=call_slices(filters=f), top=2)
    assert len(spends) == 3 and spends[-1].others == 2  # alice, bob, carol and "no user": two named, two others
    assert sum(s.cost_usd for s in spends) == cost_of(rows)
    assert sum(s.calls for s in spends) == len(rows)
    votes = vote_results(filters=f)
    everything = list(Call.objects.all())
    raw = raw_vote_results(everything, list(PreferenceVote.objects.all()), f)
    assert [(v.model_id, v.wins, v.comparisons) for v in votes] == raw
    assert sum(v.wins for v in votes) > 10 and any(v.wins < v.comparisons for v in votes)


def test_costs_stay_exact_decimals_past_float_precision(world):
    now = timezone.now()
    m = world["models"]["gpt-4o"]
    costs = [Decimal("0.000000000001"), Decimal("123.456789012345"), Decimal("0.1"), Decimal("0.2")]
    call_rows_store(
        [
            call_row(at=now, request_id=f"c{i}", requested="gpt-4o", model=m, cost=c, user_id=world["alice"].id)
            for i, c in enumerate(costs)
        ]
    )
    totals = totals_for(filters=make_filters(days=(0, 1)))
    assert totals.cost_usd == Decimal("123.756789012346")
    assert usd_json(totals.cost_usd) == "123.756789012346"
    assert usd_json(Decimal("12.500000000000")) == "12.50" and usd_json(Decimal(0)) == "0.00"


def test_filters_refuse_ranges_that_split_an_hour():
    start = datetime(2025, 1, 1, tzinfo=UTC)
    with pytest.raises(ValueError):
        CallFilters(start=start + timedelta(minutes=30), end=start + timedelta(hours=2))
    with pytest.raises(ValueError):
        CallFilters(start=start, end=start)


# ---------------------------------------------------------------------------- access rules


def test_anonymous_visitors_are_sent_to_log_in_or_get_401(world):
    client = Client()
    response = client.get(PAGE_URL)
    assert response.status_code == 302 and response["Location"].startswith(reverse("login"))
    for url in (DATA_URL, "/dashboard/export.csv"):
        response = client.get(url)
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "unauthorized"


def test_a_user_sees_only_their_own_calls(world, calls):
    alice = world["alice"]
    document = client_for(alice).get(DATA_URL, {"range": "custom", "start": "2000-01-01", "end": "2099-12-31"})
    assert document.status_code == 400  # more than 366 days
    response = client_for(alice).get(DATA_URL)
    assert response.status_code == 200
    votes = list(PreferenceVote.objects.select_related("chosen_model"))
    expected = raw_document(calls, votes, make_filters(user_id=alice.id), staff=False)
    body = response.json()
    assert body["totals"] == expected["totals"]
    assert body["spend_over_time"] == expected["spend_over_time"]
    assert "spend_by_user" not in body
    assert 0 < body["totals"]["calls"] < len(matching(calls, make_filters()))


@pytest.mark.parametrize("url", [PAGE_URL, DATA_URL, "/dashboard/export.csv"])
def test_another_users_calls_or_key_are_refused_exactly_like_unknown_ones(world, calls, url):
    """Refused, never silently narrowed; and the answer does not tell whether the account or key exists."""
    alice = client_for(world["alice"])
    for forbidden, unknown, param in (
        ({"user": "bob"}, {"user": "nobody"}, "user"),
        ({"key": world["bob_key"].id}, {"key": 999_999}, "key"),
    ):
        refused, missing = alice.get(url, forbidden), alice.get(url, unknown)
        assert refused.status_code == missing.status_code == 400, forbidden
        if url != PAGE_URL:
            assert refused.json()["error"]["param"] == param
            assert refused.json() == missing.json()
    assert alice.get(url, {"user": "alice", "key": world["alice_dev"].id}).status_code == 200


def test_staff_without_the_spend_permission_see_only_their_own(world, calls):
    staff = user_create("staffer", is_staff=True)
    body = client_for(staff).get(DATA_URL).json()
    assert body["totals"]["calls"] == 0 and "spend_by_user" not in body
    assert client_for(staff).get(DATA_URL, {"user": "alice"}).status_code == 400
    staff.groups.add(spend_viewers_group())
    staff = type(staff).objects.get(pk=staff.pk)  # permissions are cached on the instance
    body = client_for(staff).get(DATA_URL).json()
    assert body["totals"]["calls"] == len(matching(calls, make_filters())) and "spend_by_user" in body


def test_staff_see_everyone_and_can_filter_by_user_and_key(world, calls):
    root = client_for(world["root"])
    body = root.get(DATA_URL).json()
    assert body["totals"]["calls"] == len(matching(calls, make_filters()))
    assert {u["user"] for u in body["spend_by_user"]} == {"alice", "bob", "carol", "no user"}
    body = root.get(DATA_URL, {"user": "bob", "key": world["bob_key"].id}).json()
    f = make_filters(user_id=world["bob"].id, api_key_id=world["bob_key"].id)
    assert body["totals"]["calls"] == len(matching(calls, f)) > 0


def test_the_json_endpoint_takes_an_api_key_with_the_read_scope_as_bearer(world, calls):
    key, raw_key = api_key_create(user=world["alice"], name="script", reads_dashboard=True)
    client = Client(HTTP_AUTHORIZATION=f"Bearer {raw_key}")
    body = client.get(DATA_URL, {"range": "7d"}).json()
    assert body["totals"]["calls"] == len(matching(calls, make_filters(days=(6, 7), user_id=world["alice"].id)))
    assert client.get(DATA_URL, {"user": "bob"}).status_code == 400
    api_key_revoke(key=key)
    assert client.get(DATA_URL).status_code == 401
    assert Client(HTTP_AUTHORIZATION="Bearer rw-not-a-key").get(DATA_URL).status_code == 401


def test_a_key_without_the_read_scope_or_of_an_inactive_user_reads_nothing(world, calls):
    _, plain_key = api_key_create(user=world["alice"], name="models only")
    response = Client(HTTP_AUTHORIZATION=f"Bearer {plain_key}").get(DATA_URL)
    assert response.status_code == 403 and response.json()["error"]["code"] == "key_without_read_scope"
    _, read_key = api_key_create(user=world["bob"], name="script", reads_dashboard=True)
    world["bob"].is_active = False
    world["bob"].save()
    response = Client(HTTP_AUTHORIZATION=f"Bearer {read_key}").get(DATA_URL)
    assert response.status_code == 401 and response.json()["error"]["code"] == "invalid_api_key"


# ---------------------------------------------------------------------------- bad input


BAD_INPUT = [
    ({"range": "forever"}, "range"),
    ({"range": "custom"}, "start"),
    ({"range": "custom", "start": "2025-01-10"}, "end"),
    ({"range": "custom", "start": "2025-01-10", "end": "2025-01-09"}, "end"),
    ({"range": "custom", "start": "2024-01-01", "end": "2025-06-01"}, "end"),
    ({"range": "custom", "start": "not-a-date", "end": "2025-01-09"}, "start"),
    ({"range": "custom", "start": "9999-12-31", "end": "9999-12-31"}, "start"),
    ({"range": "custom", "start": "1900-01-01", "end": "1900-01-02"}, "start"),
    ({"model": "no-such-model"}, "model"),
    ({"route": "x" * 5000}, "route"),
    ({"user": "nobody"}, "user"),
    ({"key": "abc"}, "key"),
    ({"key": "-1"}, "key"),
    ({"key": "99999999999999999999999"}, "key"),
    ({"key": "12345"}, "key"),
    ({"before": "garbage!"}, "before"),
    ({"before": "MjAyNS0wMS0wMQ"}, "before"),
    ({"before": "MDAwMS0wMS0wMVQwMDowMDowMCswNTowMHwx"}, "before"),  # 0001-01-01T00:00:00+05:00|1
]


@pytest.mark.parametrize(("params", "field"), BAD_INPUT, ids=[str(p) for p, _ in BAD_INPUT])
def test_bad_filter_input_is_a_field_error_never_a_500(world, params, field):
    client = client_for(world["root"])
    page = client.get(PAGE_URL, params)
    assert page.status_code == 400
    message = page.context["form"].errors[field][0]
    assert f">{escape(message)}</p>" in page.content.decode()  # shown next to its field
    response = client.get(DATA_URL, params)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["code"] == "invalid_filter"
    assert error["param"] == field and error["message"].startswith(f"Invalid '{field}'")
    assert client.get("/dashboard/export.csv", params).status_code == 400


# ---------------------------------------------------------------------------- the page


def test_the_page_shows_the_totals_budgets_and_recent_calls(world, calls):
    Budget.objects.create(
        user=world["alice"],
        limit_usd=Decimal("50"),
        soft_threshold_pct=80,
        period_start=timezone.now().date().replace(day=1),
        spent_usd=Decimal("45.5"),
        reserved_usd=Decimal("1.25"),
    )
    Budget.objects.create(  # spent in an old month: empty now, and ranked so
        api_key=world["bob_key"], limit_usd=Decimal("500"), spent_usd=Decimal("100"), period_start=date(2020, 1, 1)
    )
    response = client_for(world["alice"]).get(PAGE_URL, {"range": "7d"})
    assert response.status_code == 200
    f = make_filters(days=(6, 7), user_id=world["alice"].id)
    rows = matching(calls, f)
    totals = response.context["totals"]
    assert (totals.calls, totals.cost_usd, totals.unpriced_calls) == (
        len(rows),
        cost_of(rows),
        sum(c.unpriced for c in rows),
    )
    html = response.content.decode()
    assert f'id="kpi-calls">{len(rows):,}<' in html
    read, written = sum(c.cached_tokens for c in rows), sum(c.cache_write_tokens for c in rows)
    assert written > 0 and (totals.cached_tokens, totals.cache_write_tokens) == (read, written)
    assert f"{read} input tokens read from the provider's cache, {written} written to it" in html
    budgets = response.context["budgets"]
    assert [(b.use.label, b.use.spent_usd, b.used_pct, b.state) for b in budgets] == [
        ("user alice", Decimal("45.5"), 91.0, "soft")
    ]
    assert 'class="bar-soft" style="left: 80%"' in html
    newest = sorted(rows, key=lambda c: (c.created_at, c.id), reverse=True)[:25]
    assert [c.request_id for c in response.context["page"].calls] == [c.request_id for c in newest]
    assert "list in admin" not in html  # the admin link is for staff
    # The spend permission shows every budget, most spent this month first: the stale one last, at zero.
    response = client_for(world["root"]).get(PAGE_URL)
    assert [(b.use.label, b.use.spent_usd) for b in response.context["budgets"]] == [
        ("user alice", Decimal("45.5")),
        (f"API key {world['bob_key']}", Decimal(0)),
    ]
    assert "list in admin" in response.content.decode()


def test_recent_calls_are_keyset_paginated_through_every_row(world, calls):
    client = client_for(world["root"])
    seen = []
    params = {}
    for _ in range(100):
        response = client.get(PAGE_URL, params)
        seen += [c.request_id for c in response.context["page"].calls]
        if not response.context["older_query"]:
            break
        params = dict(parse_qsl(response.context["older_query"]))
    expected = sorted(matching(calls, make_filters()), key=lambda c: (c.created_at, c.id), reverse=True)
    assert seen == [c.request_id for c in expected]


def test_pages_stay_whole_across_a_busy_hour_and_rare_filters(world):
    """The raw rows of a page are read from the newest hours that hold enough calls (per the hour
    rollups): a cursor inside a busy hour, calls at the same instant and a rare route lose nothing."""
    model = world["models"]["mini"]
    hour = timezone.now().astimezone(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=3)
    times = [hour + timedelta(minutes=m % 60, seconds=m // 60) for m in range(70)]  # one busy hour
    times += [hour - timedelta(hours=h, minutes=1) for h in range(1, 40)]  # one call an hour before it
    times += [hour + timedelta(minutes=30)] * 5  # five at the same instant
    rows = [
        call_row(at=at, request_id=f"b{i:03d}", requested="smart" if i % 9 == 0 else "mini", model=model)
        for i, at in enumerate(times)
    ]
    call_rows_store(rows)
    calls = list(Call.objects.all())
    for f in (make_filters(days=(3, 4)), make_filters(days=(3, 4), requested="smart")):
        seen, cursor = [], None
        while True:
            page = recent_calls(filters=f, before=cursor, limit=25)
            seen += [c.request_id for c in page.calls]
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
        expected = sorted(matching(calls, f), key=lambda c: (c.created_at, c.id), reverse=True)
        assert seen == [c.request_id for c in expected]
    nothing = make_filters(days=(3, 4), requested="smart", model_id=world["models"]["local"].id)
    assert recent_calls(filters=nothing).calls == []


def test_the_unpriced_link_opens_the_admin_list_of_those_calls(world, calls):
    client = client_for(world["root"])
    world["root"].is_superuser = True
    world["root"].save()
    response = client.get(PAGE_URL, {"range": "7d", "model": "local"})
    url = response.context["unpriced_url"]
    admin = client.get(url)
    assert admin.status_code == 200
    listed = admin.context["cl"].queryset
    f = make_filters(days=(6, 7), model_id=world["models"]["local"].id)
    assert sorted(c.request_id for c in listed) == sorted(c.request_id for c in matching(calls, f) if c.unpriced)
    assert listed.count() == response.context["totals"].unpriced_calls > 0


def embedded_document(page) -> dict:
    """The JSON document the page carries for its charts."""
    script = re.search(r'<script id="dashboard-data" type="application/json">(.*?)</script>', page.content.decode())
    return json.loads(script[1])


@pytest.mark.parametrize("viewer", ["root", "alice"])
def test_the_page_embeds_the_json_document(world, calls, viewer):
    client = client_for(world[viewer])
    for params in (
        {},
        {"range": "7d", "model": "gpt-4o"},
        {"range": "custom", "start": "2000-01-01", "end": "2000-01-02"},
    ):
        assert embedded_document(client.get(PAGE_URL, params)) == client.get(DATA_URL, params).json(), params


def test_a_page_view_reads_each_aggregate_once_in_a_fixed_number_of_queries(world, calls, django_assert_num_queries):
    client = client_for(world["root"])
    client.get(PAGE_URL)  # session, content types: warm
    params = {"model": "gpt-4o", "user": "alice"}
    # The session and the viewer, the viewer's permissions (two, read once), the form's model and user,
    # four filter lists, two for the recent calls, eleven for the charts and, for staff, the
    # quarantine's count, whatever the number of calls: 24 where the page (14) and then its charts'
    # data.json request (13) made 27. Of the eleven, two came with the votes' win rates (the calls of
    # the compared columns and the models the columns name, billing/dashboard/votes.py), one with the
    # previous period's totals and one with the spend by API key (the keys' names).
    with django_assert_num_queries(24) as page_queries:
        client.get(PAGE_URL, params)
    statements = [query["sql"] for query in page_queries.captured_queries]
    assert len(set(statements)) == len(statements)  # nothing read twice
    with django_assert_num_queries(17):  # 13 + win rates (2) + previous period (1) + key names (1)
        client.get(DATA_URL, params)


@pytest.mark.parametrize(
    "n, shown",
    [(5, "5"), (9_999, "9,999"), (10_000, "10.0K"), (12_345, "12.3K"), (999_499, "999K"), (999_500, "1.00M")]
    + [(4_560_000, "4.56M"), (7_890_000_000, "7.89B"), (5 * 10**12, "5000B")],
)
def test_tile_counts_keep_three_significant_digits(n, shown):
    from billing.dashboard.presentation import compact_count

    assert compact_count(n) == shown


@pytest.mark.parametrize(
    "now, before, text, direction",
    [
        (Decimal("1.25"), Decimal("1"), "+25.0%", "up"),
        (Decimal("0.000348"), Decimal("0.000696"), "−50.0%", "down"),
        (3, 3, "no change", "same"),
        (5, 0, "new", "up"),
        (0, 7, "−100.0%", "down"),
        (2, 3, "−33.3%", "down"),  # cut toward zero, as money is
    ],
)
def test_tiles_compare_with_the_previous_period(now, before, text, direction):
    from billing.dashboard.presentation import change_from

    change = change_from(now=now, before=before, previous_text="x")
    assert (change.text, change.direction) == (text, direction)


def test_the_page_shows_each_tile_against_the_previous_period(world, calls):
    client = Client()
    client.force_login(world["alice"])
    html = client.get(PAGE_URL, {"range": "7d"}).content.decode()
    for tile in ("spend", "calls", "tokens"):
        assert f'id="kpi-{tile}-change"' in html
    assert "vs previous 7 days" in html


def test_the_time_zone_moves_today_and_is_checked(world, calls, settings):
    from billing.forms import DashboardFilterForm

    def cleaned(**params):
        form = DashboardFilterForm(params, viewer=world["alice"])
        return form.is_valid(), form

    valid, form = cleaned(range="today", tz="Asia/Tokyo")
    zone = ZoneInfo("Asia/Tokyo")
    today = timezone.now().astimezone(zone).date()
    assert valid and form.cleaned_data["start_at"] == datetime.combine(today, time.min, tzinfo=zone)
    assert form.cleaned_data["end_at"] - form.cleaned_data["start_at"] == timedelta(days=1)
    settings.ROUTERWEB_DASHBOARD_TZ = "America/New_York"
    valid, form = cleaned(range="7d")
    assert valid and form.cleaned_data["tz"] == "America/New_York"
    assert form.cleaned_data["start_at"].astimezone(ZoneInfo("America/New_York")).time() == time.min
    for bad in ("Mars/Olympus", "../etc/passwd", "Asia/Kolkata"):  # Kolkata: UTC+5:30, rollups are whole hours
        valid, form = cleaned(tz=bad)
        assert not valid and list(form.errors) == ["tz"], bad
    response = client_for(world["alice"]).get(DATA_URL, {"tz": "Mars/Olympus"})
    assert response.status_code == 400 and response.json()["error"]["param"] == "tz"
    document = client_for(world["alice"]).get(DATA_URL, {"tz": "Asia/Tokyo", "range": "7d"}).json()
    assert document["range"]["tz"] == "Asia/Tokyo"
    assert document["spend_over_time"]["starts"][0].endswith("T00:00:00+09:00")


def test_the_page_speaks_in_the_chosen_time_zone(world, calls):
    call = Call.objects.filter(user=world["alice"]).order_by("-created_at", "-id").first()
    html = client_for(world["alice"]).get(PAGE_URL, {"tz": "Asia/Tokyo"}).content.decode()
    assert "Time (Asia/Tokyo)" in html and " · Asia/Tokyo · " in html
    assert call.created_at.astimezone(ZoneInfo("Asia/Tokyo")).strftime("%Y-%m-%d %H:%M:%S") in html
