"""A budget's worst case bounds what any prompt can cost: dense prompts, both output caps, `n`, images,
tools, and the rule for unpriced models. The bound itself, then the live gateway under 50 concurrent calls.
"""

import random
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import httpx
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from billing.budget_upkeep import budget_upkeep
from billing.models import Budget, Call
from billing.pricing import MEDIA_PART_TOKENS, TOOLS_FRAMING_TOKENS, prompt_tokens_bound
from routing.errors import ApiError
from routing.schemas import chat_request_parse
from testkit.fake_upstream import prompt_tokens as fake_prompt_tokens
from tests.billing_fixtures import budget_for, worst_case_usd
from tests.factories import route_create

USD_PER_MTOK = 1000  # input and output alike: a token costs $0.001


def bound_of(body: dict) -> int:
    return prompt_tokens_bound(body=body, body_size=len(orjson.dumps(body)))


def dense_prompt(rng: random.Random, chars: int) -> str:
    """Text a tokenizer cannot compress: CJK, emoji and symbols (the fake upstream's `dense` bills a token per byte)."""
    alphabets = ["的一是不了人我在有他这中大来上", "😀🚀🎉🔥💡🧠🌍", "§±¥©®¬¶µ¿×÷∑∏√∞≈≠", "\t\n\\\"'{}[]<>"]
    return "".join(rng.choice(rng.choice(alphabets)) for _ in range(chars))


# ---------------------------------------------------------------------------- the bound


message_text = st.text(st.characters(codec="utf-8"), max_size=200)
text_part = st.fixed_dictionaries({"type": st.just("text"), "text": message_text})
content = st.one_of(message_text, st.lists(text_part, max_size=4))
message = st.fixed_dictionaries({"role": st.sampled_from(["system", "user", "assistant"]), "content": content})


@settings(max_examples=200, deadline=None, database=None)
@given(st.lists(message, min_size=1, max_size=6))
def test_the_prompt_bound_is_at_least_a_token_per_byte_of_text(messages):
    assert bound_of({"model": "m", "messages": messages}) >= fake_prompt_tokens(messages, dense=True)


def test_each_image_and_offered_tools_add_what_the_body_does_not_show():
    image = {"type": "image_url", "image_url": {"url": "https://x.test/a.png"}}
    text_only = {"model": "m", "messages": [{"role": "user", "content": [{"type": "text", "text": "look"}]}]}
    with_images = {
        "model": "m",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "look"}, image, image]}],
    }
    tools = [{"type": "function", "function": {"name": "f"}}]
    assert bound_of(with_images) == len(orjson.dumps(with_images)) + 2 * MEDIA_PART_TOKENS
    assert bound_of(text_only) == len(orjson.dumps(text_only))
    assert (
        bound_of({**text_only, "tools": tools})
        == len(orjson.dumps({**text_only, "tools": tools})) + TOOLS_FRAMING_TOKENS
    )


def parse(**fields):
    return chat_request_parse(orjson.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}], **fields}))


def test_the_output_cap_is_the_larger_of_max_tokens_and_max_completion_tokens():
    assert parse(max_completion_tokens=1, max_tokens=4000).max_tokens == 4000
    assert parse(max_completion_tokens=4000, max_tokens=1).max_tokens == 4000
    assert parse(max_completion_tokens=7).max_tokens == 7
    assert parse().max_tokens is None and parse().choices == 1
    assert parse(n=3).choices == 3


@pytest.mark.parametrize(
    "field, value",
    [("max_tokens", 0), ("max_completion_tokens", "10"), ("max_tokens", 10**12), ("n", 0), ("n", 129), ("n", True)],
)
def test_caps_out_of_range_are_refused_naming_the_field(field, value):
    with pytest.raises(ApiError) as refused:
        parse(**{field: value})
    assert (refused.value.status, refused.value.param) == (400, field)


# ---------------------------------------------------------------------------- through the gateway


def spend_concurrently(gateway, http, bodies: list[dict]) -> list[int]:
    def call(body):
        with httpx.Client(base_url=gateway.url, headers=http.headers, timeout=60) as client:
            return client.post("/v1/chat/completions", content=orjson.dumps(body)).status_code

    with ThreadPoolExecutor(max_workers=len(bodies)) as pool:
        return list(pool.map(call, bodies))


def settled(budget: Budget) -> Budget:
    budget_upkeep.return_all()
    budget.refresh_from_db()
    return budget


def assert_within_one_worst_case(budget: Budget, *, worst: Decimal, spent_before: Decimal):
    """No call cost more than the worst case reserved for it, and the budget went over its limit by at
    most one call's worst case (`worst`: the largest of the calls')."""
    calls = list(Call.objects.filter(status="ok"))
    assert calls
    for call in calls:
        assert not call.usage_estimated and call.cost_usd <= worst
    budget = settled(budget)
    assert budget.reserved_usd == 0
    assert budget.spent_usd == spent_before + sum(call.cost_usd for call in calls)
    assert budget.spent_usd <= budget.limit_usd + worst


def test_dense_prompts_under_50_concurrent_calls_stay_within_one_worst_case(
    gateway, http, user, fake_model, recorded_calls
):
    fake_model("dense", "echo+dense+words=50+latency=30", price=(USD_PER_MTOK, USD_PER_MTOK))
    rng = random.Random(13)
    bodies = [
        {"model": "dense", "messages": [{"role": "user", "content": dense_prompt(rng, 300)}], "max_tokens": 50}
        for _ in range(50)
    ]
    worst = max(worst_case_usd(body, output_tokens=50, usd_per_mtok=USD_PER_MTOK) for body in bodies)
    limit = Decimal(10)
    spent_before = limit - worst * Decimal("3.5")
    budget = budget_for(limit=str(limit), spent=str(spent_before), user=user)
    statuses = spend_concurrently(gateway, http, bodies)
    recorded_calls()
    assert set(statuses) <= {200, 429} and statuses.count(200) >= 1
    for call in Call.objects.filter(status="ok"):
        assert call.prompt_tokens > 300  # billed per byte: CJK and emoji take 3 to 4 each
    assert_within_one_worst_case(budget, worst=worst, spent_before=spent_before)


def test_max_tokens_counts_when_max_completion_tokens_is_smaller_under_50_concurrent_calls(
    gateway, http, user, fake_model, recorded_calls
):
    fake_model("long", "echo+words=4000+latency=30", price=(USD_PER_MTOK, USD_PER_MTOK))  # bills all 4,000
    bodies = [
        {
            "model": "long",
            "messages": [{"role": "user", "content": f"call {i}"}],
            "max_completion_tokens": 1,
            "max_tokens": 4000,
        }
        for i in range(50)
    ]
    worst = max(worst_case_usd(body, output_tokens=4000, usd_per_mtok=USD_PER_MTOK) for body in bodies)
    limit = Decimal(100)
    spent_before = limit - worst * Decimal("3.5")
    budget = budget_for(limit=str(limit), spent=str(spent_before), user=user)
    statuses = spend_concurrently(gateway, http, bodies)
    recorded_calls()
    assert set(statuses) <= {200, 429} and 1 <= statuses.count(200) <= 3
    assert {call.completion_tokens for call in Call.objects.filter(status="ok")} == {4000}
    assert_within_one_worst_case(budget, worst=worst, spent_before=spent_before)


def test_each_of_n_choices_is_reserved_its_output(http, user, fake_model):
    fake_model("m", "echo+words=1", price=(0, 1_000_000))  # $1 per output token, prompts free
    budget_for(limit="5", user=user)
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    assert http.post("/v1/chat/completions", json={**body, "n": 2}).status_code == 200  # $4 at most
    refused = http.post("/v1/chat/completions", json={**body, "n": 3})
    assert refused.status_code == 429 and "could cost up to $6.00." in refused.json()["error"]["message"]


# ---------------------------------------------------------------------------- unpriced models


def post(http, model):
    return http.post("/v1/chat/completions", json={"model": model, "messages": [{"role": "user", "content": "hi"}]})


def test_an_unpriced_model_under_a_budget_is_refused_with_a_clear_403(http, user, fake_model, recorded_calls):
    fake_model("unpriced")
    budget = budget_for(limit="100", user=user)
    response = post(http, "unpriced")
    assert response.status_code == 403
    error = response.json()["error"]
    assert (error["code"], error["param"]) == ("model_unpriced", "model")
    assert "'unpriced' has no priced model" in error["message"] and "0 marks a model free" in error["message"]
    (call,) = recorded_calls()
    assert (call.status, call.http_status, call.error_code) == ("rejected", 403, "model_unpriced")
    assert call.attempts[0]["outcome"] == "skipped" and "no price" in call.attempts[0]["reason"]
    budget.refresh_from_db()
    assert (budget.spent_usd, budget.reserved_usd) == (0, 0)


def test_under_a_budget_unpriced_candidates_are_skipped_and_the_priced_one_answers(
    http, user, fake_model, recorded_calls
):
    route_create("mixed", [fake_model("unpriced"), fake_model("priced", price=(1, 2))])
    budget_for(limit="100", user=user)
    response = post(http, "mixed")
    assert response.status_code == 200 and response.headers["X-Router-Model"] == "priced"
    (call,) = recorded_calls()
    assert [(a["model"], a["outcome"]) for a in call.attempts] == [("unpriced", "skipped"), ("priced", "ok")]
    assert call.cost_usd > 0


def test_a_model_marked_free_or_a_call_without_budget_is_served(http, user, fake_model, recorded_calls):
    fake_model("free", price=(0, 0))
    fake_model("unpriced")
    budget_for(limit="1", spent="1", user=user)  # nothing left, and nothing needed
    assert post(http, "free").status_code == 200
    Budget.objects.all().delete()
    assert post(http, "unpriced").status_code == 200
    free, unpriced = recorded_calls()
    assert (free.cost_usd, free.unpriced) == (0, False) and (unpriced.cost_usd, unpriced.unpriced) == (None, True)
