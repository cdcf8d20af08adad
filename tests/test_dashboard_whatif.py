"""What would it have cost? `/dashboard/whatif.json` against an independent recomputation from the raw
`Call` rows (Decimal, by hand), with the dashboard's filters and access rules."""

from collections import defaultdict
from decimal import Decimal

import pytest
from django.test import Client

from billing.dashboard.access import CallFilters
from billing.dashboard.whatif import what_if
from billing.models import Call
from billing.money import usd_json
from routing.services import api_key_create
from tests.billing_fixtures import client_for, make_filters, matching
from tests.factories import price_create, user_create

URL = "/dashboard/whatif.json"
MTOK = Decimal(1_000_000)


def by_hand(calls: list[Call], f: CallFilters, *, price_in: str, price_cached: str | None, price_out: str) -> dict:
    """The what-if document's numbers from the raw rows: each priced chat call that a model answered
    (cache hits aside; the chosen models here are chat models) re-priced at the given rates, summed per
    answering model."""
    rate_in, rate_out = Decimal(price_in), Decimal(price_out)
    rate_cached = rate_in if price_cached is None else Decimal(price_cached)
    now: dict[str, Decimal] = defaultdict(Decimal)
    chosen: dict[str, Decimal] = defaultdict(Decimal)
    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])  # calls, estimated, unpriced
    for call in matching(calls, f):
        if call.model_id is None or call.status == Call.Status.CACHE_HIT or call.kind != "chat":
            continue
        name = call.model.name
        counts[name][1] += call.usage_estimated
        if call.cost_usd is None:
            counts[name][2] += 1
            continue
        counts[name][0] += 1
        now[name] += call.cost_usd
        uncached = call.prompt_tokens - call.cached_tokens
        chosen[name] += (
            uncached * rate_in + call.cached_tokens * rate_cached + call.completion_tokens * rate_out
        ) / MTOK
    lines = {
        name: {
            "calls": counts[name][0],
            "estimated_calls": counts[name][1],
            "unpriced_calls": counts[name][2],
            "cost_now_usd": usd_json(now[name]),
            "cost_chosen_usd": usd_json(chosen[name]),
            "difference_usd": usd_json(chosen[name] - now[name]),
        }
        for name in counts
    }
    total_now, total_chosen = sum(now.values(), Decimal(0)), sum(chosen.values(), Decimal(0))
    total = {
        "calls": sum(c[0] for c in counts.values()),
        "cost_now_usd": usd_json(total_now),
        "cost_chosen_usd": usd_json(total_chosen),
        "difference_usd": usd_json(total_chosen - total_now),
    }
    return {"lines": lines, "total": total, "estimated": sum(c[1] for c in counts.values())}


def document_numbers(body: dict) -> dict:
    keys = ("calls", "estimated_calls", "unpriced_calls", "cost_now_usd", "cost_chosen_usd", "difference_usd")
    lines = {line["model"]: {k: line[k] for k in keys} for line in body["by_model"]}
    return {"lines": lines, "total": body["total"], "estimated": body["estimated_calls"]}


@pytest.fixture
def mini_cached(world):
    """A newer price for mini, with a cached-input rate: the one in force now."""
    return price_create(model=world["models"]["mini"], input_per_mtok="0.15", output_per_mtok="0.6",
                        cached_input_per_mtok="0.075")  # fmt: skip


@pytest.mark.parametrize(
    "params, dims",
    [
        ({}, {}),  # 30 whole days: day rollups
        ({"range": "today"}, {"days": (0, 1)}),  # today: hour rollups
        ({"route": "smart"}, {"requested": "smart"}),
        ({"model": "gpt-4o"}, {"model": "gpt-4o"}),
        ({"user": "alice"}, {"user": "alice"}),
        ({"tz": "America/New_York"}, {"tz": "America/New_York"}),
    ],
)
def test_whatif_equals_a_recomputation_from_raw_rows(world, calls, mini_cached, params, dims):
    f = _filters(world, dims)
    body = client_for(world["root"]).get(URL, {**params, "whatif": "mini"}).json()
    expected = by_hand(calls, f, price_in="0.15", price_cached="0.075", price_out="0.6")
    assert document_numbers(body) == expected
    assert body["model"] == "mini" and body["price"]["price_id"] == mini_cached.id
    assert body["price"]["cached_input_per_mtok"] == "0.075"
    if not dims:  # the data set has what the notes are about
        assert body["estimated_calls"] > 0 and body["unpriced_calls"] > 0
        assert {line["model"] for line in body["by_model"]} == {"gpt-4o", "mini", "local"}


def test_whatif_on_a_model_without_a_cached_rate_prices_cached_tokens_as_input(world, calls):
    body = client_for(world["root"]).get(URL, {"whatif": "gpt-4o"}).json()
    assert document_numbers(body) == by_hand(calls, make_filters(), price_in="2.5", price_cached=None, price_out="10")


def test_a_user_re_prices_only_their_own_calls(world, calls, mini_cached):
    alice = client_for(world["alice"])
    body = alice.get(URL, {"whatif": "mini"}).json()
    expected = by_hand(calls, make_filters(user_id=world["alice"].id), price_in="0.15", price_cached="0.075",
                       price_out="0.6")  # fmt: skip
    assert document_numbers(body) == expected
    everyone = client_for(world["root"]).get(URL, {"whatif": "mini"}).json()
    assert 0 < body["total"]["calls"] < everyone["total"]["calls"]
    refused = alice.get(URL, {"whatif": "mini", "user": "bob"})
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "user"
    assert (
        alice.get(URL, {"whatif": "mini", "key": world["bob_key"].id}).json()
        == alice.get(URL, {"whatif": "mini", "key": 999_999}).json()
    )


def test_bearer_key_with_the_read_scope_and_anonymous(world, calls):
    _, raw_key = api_key_create(user=world["alice"], name="script", reads_dashboard=True)
    body = Client(HTTP_AUTHORIZATION=f"Bearer {raw_key}").get(URL, {"whatif": "gpt-4o"}).json()
    alices = make_filters(user_id=world["alice"].id)
    assert document_numbers(body) == by_hand(calls, alices, price_in="2.5", price_cached=None, price_out="10")
    assert Client().get(URL, {"whatif": "gpt-4o"}).status_code == 401


@pytest.mark.parametrize(
    "params, message",
    [
        ({}, "Pick the model"),
        ({"whatif": "no-such-model"}, "No such model"),
        ({"whatif": "local"}, "local has no price"),
        ({"whatif": "x" * 5000}, "No such model"),
        ({"whatif": "gpt\x00-4o"}, "NUL"),  # refused where it enters, by the project's middleware
    ],
)
def test_a_bad_model_is_a_400_on_the_field(world, calls, params, message):
    response = client_for(world["root"]).get(URL, params)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == "whatif" and message in error["message"]
    assert error["code"] == ("nul_byte" if message == "NUL" else "invalid_filter")


def test_nothing_in_range_is_an_empty_answer(world):
    user_create("dave")
    body = client_for(world["root"]).get(URL, {"whatif": "gpt-4o", "range": "today"}).json()
    assert body["by_model"] == [] and body["total"]["cost_chosen_usd"] == "0.00"


def _filters(world, dims: dict) -> CallFilters:
    dims = dict(dims)
    days = dims.pop("days", (29, 30))
    if "user" in dims:
        dims["user_id"] = world[dims.pop("user")].id
    if "model" in dims:
        dims["model_id"] = world["models"][dims.pop("model")].id
    return make_filters(days=days, **dims)


def test_one_rollup_scan_and_no_raw_call_row(world, calls, mini_cached, django_assert_num_queries):
    with django_assert_num_queries(1) as captured:
        result = what_if(filters=make_filters(), chosen=world["models"]["mini"], price=mini_cached)
        assert result.lines
    (query,) = captured.captured_queries
    assert "billing_callrollup" in query["sql"] and 'billing_call"' not in query["sql"]
