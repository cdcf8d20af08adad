"""An Anthropic provider (`api_format: anthropic`) behind /v1/chat/completions: the live server, the
official `openai` SDK as the client and the fake upstream's Anthropic mode as the provider."""

import base64
import json
from decimal import Decimal

import openai
import pytest

from tests.conftest import ANTHROPIC_KEY, calls_settle
from tests.factories import claude_price_create, route_create

MESSAGES = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "hello there world"},
]
# the fake's rule: system 3 words + 3, user 3 words + 3
INPUT_TOKENS = 12
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "lookup",
            "description": "Look a thing up.",
            "parameters": {"type": "object", "properties": {"q": {"type": "string"}}},
        },
    }
]


def sent(fake_upstream) -> dict:
    return fake_upstream.app.stats()["last_request"]


def test_a_chat_completion_is_answered_by_the_messages_api(client, anthropic_model, fake_upstream, recorded_calls):
    anthropic_model("claude", "claude+words=5")
    completion = client.chat.completions.create(model="claude", messages=MESSAGES, max_tokens=50)
    assert completion.choices[0].message.content == "Echo: hello there world lorem"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage.prompt_tokens == INPUT_TOKENS and completion.usage.completion_tokens == 5
    headers = fake_upstream.app.stats()["last_headers"]
    assert headers["x-api-key"] == ANTHROPIC_KEY and "authorization" not in headers
    assert headers["anthropic-version"] == "2023-06-01"
    body = sent(fake_upstream)
    assert body["system"] == "You are terse."
    assert body["messages"] == [{"role": "user", "content": "hello there world"}]
    assert body["max_tokens"] == 50 and body["model"] == "claude+words=5"
    [call] = recorded_calls()
    assert (call.status, call.prompt_tokens, call.completion_tokens, call.usage_estimated) == ("ok", 12, 5, False)


def test_max_tokens_defaults_to_the_models_limit_then_to_4096(client, anthropic_model, fake_upstream):
    anthropic_model("limited", max_output_tokens=777)
    anthropic_model("unlimited")
    client.chat.completions.create(model="limited", messages=MESSAGES)
    assert sent(fake_upstream)["max_tokens"] == 777
    client.chat.completions.create(model="unlimited", messages=MESSAGES)
    assert sent(fake_upstream)["max_tokens"] == 4096
    client.chat.completions.create(model="unlimited", messages=MESSAGES, max_completion_tokens=3)
    assert sent(fake_upstream)["max_tokens"] == 3


def test_the_answer_cut_at_max_tokens_finishes_with_length(client, anthropic_model):
    anthropic_model("claude", "claude+words=9")
    completion = client.chat.completions.create(model="claude", messages=MESSAGES, max_tokens=2)
    assert completion.choices[0].message.content == "Echo: hello"
    assert completion.choices[0].finish_reason == "length"


def test_sampling_fields_and_stop_are_mapped(client, anthropic_model, fake_upstream):
    anthropic_model("claude")
    client.chat.completions.create(
        model="claude", messages=MESSAGES, temperature=1.5, top_p=0.5, stop="END", user="u-1", n=1
    )
    body = sent(fake_upstream)
    assert (body["temperature"], body["top_p"], body["stop_sequences"]) == (1, 0.5, ["END"])
    assert body["metadata"] == {"user_id": "u-1"}
    assert "n" not in body and "stream_options" not in body


def test_a_stream_relays_chunks_with_usage_in_the_final_chunk(client, anthropic_model, recorded_calls):
    anthropic_model("claude", "claude+words=4+cached=30+cache-write=6")
    chunks = list(
        client.chat.completions.create(
            model="claude", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
        )
    )
    assert all(chunk.object == "chat.completion.chunk" for chunk in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Echo: hello there world"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == []
    usage = chunks[-1].usage
    assert (usage.prompt_tokens, usage.completion_tokens) == (INPUT_TOKENS + 30 + 6, 4)
    assert usage.prompt_tokens_details.cached_tokens == 30
    [call] = recorded_calls()
    assert (call.prompt_tokens, call.cached_tokens, call.cache_write_tokens, call.completion_tokens) == (48, 30, 6, 4)
    assert call.stream and not call.usage_estimated


def test_a_stream_without_include_usage_has_no_usage_chunk_but_the_row_has_usage(
    client, anthropic_model, recorded_calls
):
    anthropic_model("claude", "claude+words=2")
    chunks = list(client.chat.completions.create(model="claude", messages=MESSAGES, stream=True))
    assert all(chunk.usage is None for chunk in chunks)
    [call] = recorded_calls()
    assert (call.prompt_tokens, call.completion_tokens, call.usage_estimated) == (INPUT_TOKENS, 2, False)


def test_tool_use_goes_out_as_tool_calls_and_the_result_comes_back_in(client, anthropic_model, fake_upstream):
    anthropic_model("claude", "claude+tool-use+words=2")
    ask = [{"role": "user", "content": "find it"}]
    completion = client.chat.completions.create(model="claude", messages=ask, tools=TOOLS, tool_choice="required")
    body = sent(fake_upstream)
    assert body["tools"] == [
        {
            "name": "lookup",
            "description": "Look a thing up.",
            "input_schema": {"type": "object", "properties": {"q": {"type": "string"}}},
        }
    ]
    assert body["tool_choice"] == {"type": "any"}
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    [call] = choice.message.tool_calls
    assert call.function.name == "lookup" and json.loads(call.function.arguments) == {"echo": "Echo: find"}

    follow_up = [
        *ask,
        choice.message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "forty two"},
    ]
    anthropic_model("plain", "claude+words=3")
    answer = client.chat.completions.create(model="plain", messages=follow_up, tools=TOOLS)
    assert answer.choices[0].message.content == "Echo: forty two"
    turns = sent(fake_upstream)["messages"]
    assert turns[1]["content"][-1] == {
        "type": "tool_use",
        "id": call.id,
        "name": "lookup",
        "input": {"echo": "Echo: find"},
    }
    assert turns[2] == {
        "role": "user",
        "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "forty two"}],
    }


def test_a_streamed_tool_call_arrives_in_pieces_that_add_up(client, anthropic_model):
    anthropic_model("claude", "claude+tool-use+words=2")
    chunks = list(
        client.chat.completions.create(
            model="claude", messages=[{"role": "user", "content": "find it"}], tools=TOOLS, stream=True
        )
    )
    calls = [c.choices[0].delta.tool_calls[0] for c in chunks if c.choices and c.choices[0].delta.tool_calls]
    assert calls[0].id.startswith("toolu_fake_") and calls[0].function.name == "lookup"
    assert json.loads("".join(c.function.arguments for c in calls)) == {"echo": "Echo: find"}
    assert {c.index for c in calls} == {0}
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_images_are_sent_as_base64_and_url_sources(client, anthropic_model, fake_upstream):
    anthropic_model("claude")
    png = base64.b64encode(b"\x89PNG fake").decode()
    content = [
        {"type": "text", "text": "what is this"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{png}"}},
        {"type": "image_url", "image_url": {"url": "https://example.test/cat.jpg"}},
    ]
    client.chat.completions.create(model="claude", messages=[{"role": "user", "content": content}])
    [turn] = sent(fake_upstream)["messages"]
    assert turn["content"] == [
        {"type": "text", "text": "what is this"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": png}},
        {"type": "image", "source": {"type": "url", "url": "https://example.test/cat.jpg"}},
    ]


def test_a_400_goes_back_to_the_client_without_fallback(client, anthropic_model, fake_model, recorded_calls):
    anthropic_model("claude", "claude+status=400")
    fake_model("backup")
    route_create("chat", ["claude", "backup"])
    with pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(model="chat", messages=MESSAGES)
    assert raised.value.body["type"] == "invalid_request_error"
    assert "injected HTTP 400" in raised.value.body["message"]
    [call] = recorded_calls()
    assert call.attempt_count == 1 and call.http_status == 400


@pytest.mark.parametrize(
    ("failure", "stream"),
    [
        *(
            (failure, stream)
            for failure in ("status=529", "status=429", "status=500", "malformed")
            for stream in (False, True)
        ),
        ("stream-error=0", True),  # an `error` event before any content
        ("empty-stream", True),
    ],
)
def test_an_anthropic_failure_falls_back_to_an_openai_compatible_candidate(
    client, anthropic_model, fake_model, recorded_calls, failure, stream
):
    anthropic_model("claude", f"claude+{failure}")
    fake_model("backup", "echo+words=3")
    route_create("chat", ["claude", "backup"])
    answer = client.chat.completions.create(model="chat", messages=MESSAGES, stream=stream)
    text = "".join(c.choices[0].delta.content or "" for c in answer if c.choices) if stream else None
    assert (text if stream else answer.choices[0].message.content) == "Echo: hello there"
    [call] = recorded_calls()
    assert call.model.name == "backup"
    assert [a["outcome"] for a in call.attempts][0] != "ok"


@pytest.mark.parametrize("stream", [False, True])
def test_an_openai_compatible_failure_falls_back_to_the_anthropic_candidate(
    client, anthropic_model, fake_model, recorded_calls, stream
):
    fake_model("gpt", "echo+status=503")
    anthropic_model("claude", "claude+words=3")
    route_create("chat", ["gpt", "claude"])
    answer = client.chat.completions.create(model="chat", messages=MESSAGES, stream=stream)
    text = "".join(c.choices[0].delta.content or "" for c in answer if c.choices) if stream else None
    assert (text if stream else answer.choices[0].message.content) == "Echo: hello there"
    [call] = recorded_calls()
    assert call.model.name == "claude" and call.attempt_count == 2


def test_an_error_event_after_content_ends_the_stream_with_an_error(client, anthropic_model, recorded_calls):
    anthropic_model("claude", "claude+stream-error=2")
    chunks = []
    with pytest.raises(openai.APIError, match="Overloaded"):
        for chunk in client.chat.completions.create(model="claude", messages=MESSAGES, stream=True):
            chunks.append(chunk)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Echo: hello"
    [call] = recorded_calls()
    assert call.status == "error" and call.usage_estimated


@pytest.mark.parametrize("kind", ["negative", "huge", "string", "float", "null", "bool"])
@pytest.mark.parametrize("stream", [False, True])
def test_hostile_usage_never_reaches_a_row(client, anthropic_model, recorded_calls, kind, stream):
    anthropic_model("claude", f"claude+bad-usage={kind}+words=3")
    answer = client.chat.completions.create(model="claude", messages=MESSAGES, stream=stream)
    if stream:
        list(answer)
    else:
        assert answer.usage is None
    [call] = recorded_calls()
    assert call.usage_estimated and call.estimate_reason.startswith(("invalid_usage:", "no_usage"))
    assert 0 <= call.prompt_tokens < 100 and 0 <= call.cache_write_tokens == 0


def test_unknown_events_and_blocks_are_skipped(client, anthropic_model, recorded_calls):
    anthropic_model("claude", "claude+odd-events+words=3")
    chunks = list(client.chat.completions.create(model="claude", messages=MESSAGES, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Echo: hello there"
    [call] = recorded_calls()
    assert call.status == "ok" and call.completion_tokens == 3


def test_a_broken_stream_is_recorded_with_estimated_tokens(client, anthropic_model, recorded_calls):
    anthropic_model("claude", "claude+drop=2")
    with pytest.raises(openai.APIError):
        list(client.chat.completions.create(model="claude", messages=MESSAGES, stream=True))
    [call] = recorded_calls()
    assert call.usage_estimated and call.estimate_reason == "no_usage"


def test_the_cost_row_prices_four_token_classes_exactly(client, anthropic_model, recorded_calls):
    model = anthropic_model("claude", "claude+words=7+cached=1000+cache-write=333")
    claude_price_create(model)
    completion = client.chat.completions.create(model="claude", messages=MESSAGES)
    assert completion.usage.prompt_tokens == INPUT_TOKENS + 1000 + 333
    [call] = recorded_calls()
    expected = (
        INPUT_TOKENS * Decimal("3") + 1000 * Decimal("0.3") + 333 * Decimal("3.75") + 7 * Decimal("15")
    ) / Decimal(1_000_000)
    assert call.cost_usd == expected == Decimal("0.00168975")
    assert (call.cached_tokens, call.cache_write_tokens) == (1000, 333)


def test_cost_for_usage_prices_each_token_class_at_its_rate():
    from billing.pricing import PriceSnap, cost_for_usage

    price = PriceSnap(None, Decimal("3"), Decimal("15"), Decimal("0.3"), Decimal("3.75"))
    cost = cost_for_usage(price, prompt_tokens=1345, cached_tokens=1000, completion_tokens=7, cache_write_tokens=333)
    assert cost == (12 * Decimal(3) + 1000 * Decimal("0.3") + 333 * Decimal("3.75") + 7 * Decimal(15)) / 10**6
    no_write_rate = PriceSnap(None, Decimal("3"), Decimal("15"), Decimal("0.3"))
    cost = cost_for_usage(
        no_write_rate, prompt_tokens=1345, cached_tokens=1000, completion_tokens=7, cache_write_tokens=333
    )
    assert cost == ((12 + 333) * Decimal(3) + 1000 * Decimal("0.3") + 7 * Decimal(15)) / 10**6  # writes at input
    # cache counts beyond the prompt cannot be priced twice
    assert (
        cost_for_usage(price, prompt_tokens=10, cached_tokens=8, completion_tokens=0, cache_write_tokens=5)
        == (8 * Decimal("0.3") + 2 * Decimal("3.75")) / 10**6
    )


def test_a_budgets_worst_case_prices_the_prompt_at_the_cache_write_rate_when_dearer():
    from billing.budgets import worst_case_cost
    from billing.pricing import PriceSnap

    price = PriceSnap(None, Decimal("3"), Decimal("15"), Decimal("0.3"), Decimal("3.75"))

    class Model:
        max_output_tokens = None

    worst = worst_case_cost([(Model(), price)], prompt_tokens=1000, max_tokens=10)
    assert worst == (1000 * Decimal("3.75") + 10 * Decimal(15)) / 10**6


def test_budgets_apply_to_anthropic_calls(client, anthropic_model, user, recorded_calls):
    from tests.billing_fixtures import budget_for

    anthropic_model("claude", price=(1_000_000, 1_000_000))  # $1 a token: no call fits
    budget_for(limit="5", user=user)
    with pytest.raises(openai.RateLimitError) as refused:
        client.chat.completions.create(model="claude", messages=MESSAGES, max_tokens=10)
    assert refused.value.code == "budget_exceeded"
    [call] = recorded_calls()
    assert call.status == "rejected" and call.cost_usd == 0


def test_rate_limits_apply_to_anthropic_calls(client, anthropic_model, user):
    from routing.models import UserRateLimit

    anthropic_model("claude")
    UserRateLimit.objects.create(user=user, rpm_limit=1)
    client.chat.completions.create(model="claude", messages=MESSAGES)
    with pytest.raises(openai.RateLimitError) as refused:
        client.chat.completions.create(model="claude", messages=MESSAGES)
    assert refused.value.code == "rate_limit_exceeded"


ANTHROPIC_REGISTRY = """\
providers:
  - name: anthropic
    api_format: anthropic
    base_url: https://api.anthropic.com/v1
    api_key_env: ANTHROPIC_API_KEY
models:
  - name: claude-sonnet
    provider: anthropic
    upstream_model: claude-sonnet-4-5
    max_output_tokens: 8192
    price: {input_per_mtok: 3, output_per_mtok: 15, cached_input_per_mtok: 0.3, cache_write_per_mtok: 3.75}
"""


def test_an_anthropic_provider_imports_and_exports_from_the_registry_yaml(tmp_path, transactional_db):
    import io

    import yaml
    from django.core.management import CommandError, call_command

    from billing.services import price_current
    from routing.models import ModelEndpoint, Provider

    path = tmp_path / "registry.yaml"
    path.write_text(ANTHROPIC_REGISTRY)
    call_command("import_registry", str(path), stdout=io.StringIO())
    assert Provider.objects.get(name="anthropic").api_format == "anthropic"
    price = price_current(model=ModelEndpoint.objects.get(name="claude-sonnet"))
    assert (price.cached_input_per_mtok, price.cache_write_per_mtok) == (Decimal("0.3"), Decimal("3.75"))

    out = io.StringIO()
    call_command("export_registry", stdout=out)
    exported = yaml.safe_load(out.getvalue())
    assert exported["providers"][0]["api_format"] == "anthropic"
    assert exported["models"][0]["price"]["cache_write_per_mtok"] == 3.75
    assert yaml.safe_load(ANTHROPIC_REGISTRY)["models"][0]["price"] == exported["models"][0]["price"]

    path.write_text(ANTHROPIC_REGISTRY.replace("cache_write_per_mtok: 3.75", "cache_write_per_mtok: -1"))
    with pytest.raises(CommandError, match="cache_write_per_mtok"):
        call_command("import_registry", str(path), stdout=io.StringIO())


def test_an_openai_compatible_upstreams_cache_writes_are_priced_too(client, fake_model, recorded_calls):
    model = fake_model("routed", "echo+words=2+cached=4+cache-write=10")
    claude_price_create(model)
    completion = client.chat.completions.create(model="routed", messages=MESSAGES)
    assert completion.usage.prompt_tokens == INPUT_TOKENS + 10
    [call] = recorded_calls()
    assert (call.prompt_tokens, call.cached_tokens, call.cache_write_tokens) == (22, 4, 10)
    assert call.cost_usd == (8 * Decimal(3) + 4 * Decimal("0.3") + 10 * Decimal("3.75") + 2 * Decimal(15)) / 10**6


def test_a_text_stream_fills_the_response_cache_and_a_tool_call_stream_does_not(client, anthropic_model, fake_upstream):
    anthropic_model("claude", "claude+words=3+cache-write=2")
    cache = {"X-Router-Cache": "true"}
    text = "".join(
        c.choices[0].delta.content or ""
        for c in client.chat.completions.create(model="claude", messages=MESSAGES, stream=True, extra_headers=cache)
        if c.choices
    )
    calls_settle()
    hit = client.chat.completions.with_raw_response.create(model="claude", messages=MESSAGES, extra_headers=cache)
    assert hit.headers["X-Router-Cache"] == "hit"
    assert hit.parse().choices[0].message.content == text
    assert hit.parse().choices[0].finish_reason == "stop"

    anthropic_model("claude-tools", "claude+tool-use+words=2")
    tool_ask = [{"role": "user", "content": "find it"}]
    for _ in range(2):
        chunks = client.chat.completions.with_raw_response.create(
            model="claude-tools", messages=tool_ask, tools=TOOLS, stream=True, extra_headers=cache
        )
        assert chunks.headers["X-Router-Cache"] == "miss"
        list(chunks.parse())
        calls_settle()


def test_an_error_events_type_and_message_are_fit_for_a_row_and_a_log():
    """Both relays (to OpenAI clients and the native /v1/messages one) read an error event through this:
    what the upstream sent reaches the attempts column, which PostgreSQL refuses with a NUL in it."""
    from routing.providers.anthropic_stream import ERROR_TYPE_MAX, anthropic_error_event

    error_type, message = anthropic_error_event(
        {"type": "error", "error": {"type": "over\x00loaded" * 9, "message": 7}}
    )
    assert "\x00" not in error_type and len(error_type) == ERROR_TYPE_MAX and error_type.startswith("overloaded")
    assert message == "the upstream sent an error event"
    assert anthropic_error_event({"type": "error", "error": "not an object"}) == ("error", message)
