"""The answer carries its cost (`usage.cost`, OpenRouter's field), equal to the call row's exact cost."""

from decimal import Decimal

import orjson

from tests.factories import price_create

MESSAGES = [{"role": "user", "content": "hello there"}]


def test_a_json_answer_carries_the_cost_of_its_row(http, fake_model, recorded_calls):
    model = fake_model("priced", "echo")
    price_create(model=model, input_per_mtok="2.5", output_per_mtok="10", cached_input_per_mtok="1.25")

    response = http.post("/v1/chat/completions", json={"model": "priced", "messages": MESSAGES})

    assert response.status_code == 200
    usage = orjson.loads(response.content)["usage"]
    (call,) = recorded_calls()
    assert call.cost_usd > 0
    assert Decimal(response.text.split('"cost":')[1].split("}")[0].split(",")[0]) == call.cost_usd
    assert usage["prompt_tokens"] == call.prompt_tokens


def test_the_final_usage_chunk_of_a_stream_carries_the_cost(http, fake_model, recorded_calls):
    model = fake_model("priced", "echo")
    price_create(model=model, input_per_mtok="3", output_per_mtok="15")
    body = {"model": "priced", "messages": MESSAGES, "stream": True, "stream_options": {"include_usage": True}}

    with http.stream("POST", "/v1/chat/completions", json=body) as response:
        events = [line[6:] for line in response.iter_lines() if line.startswith("data: ") and line != "data: [DONE]"]

    usage_events = [orjson.loads(e) for e in events if orjson.loads(e).get("usage")]
    assert len(usage_events) == 1
    (call,) = recorded_calls()
    assert Decimal(str(usage_events[0]["usage"]["cost"])) == call.cost_usd
    raw = next(e for e in events if '"usage"' in e and '"cost"' in e)
    assert Decimal(raw.split('"cost":')[1].split("}")[0].split(",")[0]) == call.cost_usd  # every digit


def test_an_unpriced_model_answers_without_a_cost(http, fake_model, recorded_calls):
    fake_model("free-ish", "echo")

    response = http.post("/v1/chat/completions", json={"model": "free-ish", "messages": MESSAGES})

    assert "cost" not in response.json()["usage"]
    (call,) = recorded_calls()
    assert call.unpriced


def test_the_sdk_reads_the_cost(client, fake_model, recorded_calls):
    model = fake_model("priced", "echo")
    price_create(model=model, input_per_mtok="1", output_per_mtok="2")

    completion = client.chat.completions.create(model="priced", messages=MESSAGES)

    (call,) = recorded_calls()
    assert Decimal(str(completion.usage.model_extra["cost"])) == call.cost_usd
