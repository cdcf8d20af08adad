"""/v1/messages (Anthropic's Messages API) through the live server, with the official `anthropic` SDK as
client and the fake upstream as candidates: OpenAI-compatible ones (translated both ways) and
Anthropic ones (passed through natively)."""

from decimal import Decimal

import anthropic
import httpx
import orjson
import pytest

from routing.models import ApiKey
from routing.usage import prompt_tokens_estimate
from tests.billing_fixtures import budget_for
from tests.conftest import ANTHROPIC_KEY
from tests.factories import claude_price_create, route_create

HELLO = [{"role": "user", "content": "hello router"}]
ECHO_5 = "Echo: hello router lorem ipsum"
TOOLS = [
    {
        "name": "get_weather",
        "description": "The weather in a city.",
        "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
    }
]


@pytest.fixture
def claude(gateway, api_key) -> anthropic.Anthropic:
    """The official SDK pointed at routerweb (it sends the key as `x-api-key`)."""
    return anthropic.Anthropic(base_url=gateway.url, api_key=api_key, max_retries=0, timeout=20)


@pytest.fixture
def raw(gateway, api_key) -> httpx.Client:
    with httpx.Client(base_url=gateway.url, headers={"x-api-key": api_key}, timeout=20) as client:
        yield client


def sse_events(response: httpx.Response) -> list[tuple[str, dict]]:
    """(event name, data) of each server-sent event."""
    events = []
    for block in response.read().decode().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.split("\n") if ": " in line)
        if "event" in lines:
            events.append((lines["event"], orjson.loads(lines["data"])))
    return events


# ---------------------------------------------------------------------------- OpenAI-compatible candidates


def test_message_through_a_chat_completions_candidate(claude, fake_model, fake_upstream, recorded_calls):
    fake_model("echo-model", "echo+words=5", price=(1, 2))
    response = claude.messages.with_raw_response.create(
        model="echo-model", max_tokens=100, messages=HELLO, stop_sequences=["zz"], extra_body={"temperature": 0.5}
    )
    message = response.parse()

    assert message.type == "message" and message.role == "assistant"
    assert [block.type for block in message.content] == ["text"] and message.content[0].text == ECHO_5
    assert message.stop_reason == "end_turn"
    assert (message.usage.input_tokens, message.usage.output_tokens) == (5, 5)
    assert message.id.startswith("msg_")
    assert response.headers["request-id"] == response.headers["X-Request-Id"]
    sent = fake_upstream.app.stats()["last_request"]
    assert (sent["model"], sent["max_tokens"], sent["temperature"], sent["stop"]) == ("echo+words=5", 100, 0.5, ["zz"])
    assert sent["messages"] == HELLO
    (call,) = recorded_calls()
    assert (call.status, call.requested, call.model.name, call.request_id, call.kind) == (
        "ok",
        "echo-model",
        "echo-model",
        response.headers["X-Request-Id"],
        "chat",
    )
    assert (call.prompt_tokens, call.completion_tokens, call.usage_estimated) == (5, 5, False)
    assert call.cost_usd == Decimal(5 * 1 + 5 * 2) / 1_000_000


def test_an_embeddings_model_is_refused_in_anthropics_shape(claude, fake_model, fake_upstream, recorded_calls):
    fake_model("embedder", "echo", kind="embeddings", price=(1, 0))
    fake_upstream.app.reset()
    with pytest.raises(anthropic.BadRequestError) as refused:
        claude.messages.create(model="embedder", max_tokens=10, messages=HELLO)
    assert refused.value.body["type"] == "error"
    assert refused.value.body["error"]["type"] == "invalid_request_error"
    assert "/v1/embeddings" in refused.value.body["error"]["message"]
    assert fake_upstream.app.stats()["requests"] == 0
    (call,) = recorded_calls()
    assert (call.kind, call.status, call.error_code, call.model_id) == ("chat", "rejected", "model_kind_mismatch", None)


def test_stream_through_a_chat_completions_candidate(claude, fake_model, recorded_calls):
    fake_model("streamer", "echo+words=5", price=(1, 2))
    with claude.messages.stream(model="streamer", max_tokens=100, messages=HELLO) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()

    assert text == ECHO_5 and final.content[0].text == ECHO_5
    assert final.stop_reason == "end_turn"
    assert (final.usage.input_tokens, final.usage.output_tokens) == (5, 5)
    (call,) = recorded_calls()
    assert call.stream and call.status == "ok" and call.ttft_ms is not None
    assert (call.prompt_tokens, call.completion_tokens, call.usage_estimated) == (5, 5, False)
    assert call.cost_usd == Decimal(15) / 1_000_000


def test_stream_event_sequence(raw, fake_model):
    fake_model("streamer", "echo+words=3")
    body = {"model": "streamer", "max_tokens": 10, "messages": HELLO, "stream": True}
    response = raw.post("/v1/messages", json=body, headers={"anthropic-version": "2023-06-01"})
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
    events = sse_events(response)
    names = [name for name, _ in events]
    assert names == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert all(data["type"] == name for name, data in events)
    assert events[-2][1] == {
        "type": "message_delta",
        "delta": {"stop_reason": "end_turn", "stop_sequence": None},
        "usage": {
            "input_tokens": 5,
            "output_tokens": 3,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
        },
    }


def test_create_with_stream_true(claude, fake_model):
    fake_model("streamer", "echo+words=4")
    events = list(claude.messages.create(model="streamer", max_tokens=10, messages=HELLO, stream=True))
    deltas = [event.delta.text for event in events if event.type == "content_block_delta"]
    assert "".join(deltas) == "Echo: hello router lorem"
    assert events[0].type == "message_start" and events[-1].type == "message_stop"


def test_tool_use_round_trip(claude, fake_model, fake_upstream):
    fake_model("tooler", "echo+words=3+tool-use")
    messages = [{"role": "user", "content": "weather in Paris"}]
    first = claude.messages.create(model="tooler", max_tokens=50, messages=messages, tools=TOOLS)
    assert first.stop_reason == "tool_use"
    assert [block.type for block in first.content] == ["text", "tool_use"]
    tool_use = first.content[1]
    assert (tool_use.name, tool_use.input) == ("get_weather", {"echo": "Echo: weather in"})
    sent = fake_upstream.app.stats()["last_request"]
    assert sent["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": TOOLS[0]["input_schema"],
                "description": "The weather in a city.",
            },
        }
    ]

    fake_model("answerer", "echo+words=3")
    follow_up = [
        *messages,
        {"role": "assistant", "content": [block.model_dump(exclude_none=True) for block in first.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": tool_use.id, "content": "sunny"}]},
    ]
    second = claude.messages.create(model="answerer", max_tokens=50, messages=follow_up, tools=TOOLS)
    assert second.stop_reason == "end_turn" and second.content[0].type == "text"
    sent = fake_upstream.app.stats()["last_request"]
    assert sent["messages"][1]["tool_calls"] == [
        {
            "id": tool_use.id,
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"echo":"Echo: weather in"}'},
        }
    ]
    assert sent["messages"][2] == {"role": "tool", "tool_call_id": tool_use.id, "content": "sunny"}


def test_streamed_tool_use(claude, fake_model):
    fake_model("tooler", "echo+words=2+tool-use")
    messages = [{"role": "user", "content": "weather in Paris"}]
    with claude.messages.stream(
        model="tooler", max_tokens=50, messages=messages, tools=TOOLS, tool_choice={"type": "any"}
    ) as stream:
        final = stream.get_final_message()
    assert final.stop_reason == "tool_use"
    assert [block.type for block in final.content] == ["text", "tool_use"]
    assert final.content[1].input == {"echo": "Echo: weather"}


def test_claude_code_request_pattern(gateway, api_key, fake_model, fake_upstream, recorded_calls):
    """System blocks with cache_control, tools with cache_control, metadata, streaming, a Bearer token
    (ANTHROPIC_AUTH_TOKEN) and the beta headers Claude Code sends."""
    fake_model("claude-sonnet", "echo+words=3", price=(3, 15))
    client = anthropic.Anthropic(base_url=gateway.url, auth_token=api_key, max_retries=0, timeout=20)
    system = [
        {"type": "text", "text": "You are Claude Code.", "cache_control": {"type": "ephemeral"}},
        {"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral", "ttl": "1h"}},
    ]
    tools = [{**TOOLS[0], "cache_control": {"type": "ephemeral"}}]
    messages = [
        {"role": "user", "content": [{"type": "text", "text": "hello router", "cache_control": {"type": "ephemeral"}}]}
    ]
    with client.messages.stream(
        model="claude-sonnet",
        max_tokens=32000,
        system=system,
        messages=messages,
        tools=tools,
        metadata={"user_id": "user_abc_session_1"},
        extra_body={"temperature": 1},
        extra_headers={"anthropic-beta": "claude-code-20250219,interleaved-thinking-2025-05-14"},
    ) as stream:
        text = "".join(stream.text_stream)
    assert text == "Echo: hello router"
    sent = fake_upstream.app.stats()["last_request"]
    assert sent["messages"][0] == {
        "role": "system",
        "content": [{"type": "text", "text": "You are Claude Code."}, {"type": "text", "text": "Be brief."}],
    }
    assert sent["messages"][1] == {"role": "user", "content": [{"type": "text", "text": "hello router"}]}
    assert sent["user"] == "user_abc_session_1" and sent["stream_options"] == {"include_usage": True}
    assert sent["tools"][0]["function"]["name"] == "get_weather"
    (call,) = recorded_calls()
    assert call.status == "ok" and call.prompt_tokens == (4 + 2 + 3) + (2 + 3) and call.completion_tokens == 3


# ---------------------------------------------------------------------------- auth and errors


def test_bearer_token_authenticates(gateway, api_key, fake_model):
    fake_model("echo-model", "echo+words=2")
    client = anthropic.Anthropic(base_url=gateway.url, auth_token=api_key, max_retries=0, timeout=20)
    assert client.messages.create(model="echo-model", max_tokens=5, messages=HELLO).content[0].text == "Echo: hello"


def test_bad_key_is_401_in_anthropics_shape(gateway, fake_model, recorded_calls):
    fake_model("echo-model")
    client = anthropic.Anthropic(base_url=gateway.url, api_key="rw-not-a-key", max_retries=0, timeout=20)
    with pytest.raises(anthropic.AuthenticationError) as raised:
        client.messages.create(model="echo-model", max_tokens=5, messages=HELLO)
    assert raised.value.status_code == 401
    assert raised.value.body == {
        "type": "error",
        "error": {"type": "authentication_error", "message": "Invalid or revoked API key, or its user is inactive."},
    }
    missing = httpx.post(f"{gateway.url}/v1/messages", json={"model": "echo-model"})
    assert missing.status_code == 401 and missing.json()["error"]["type"] == "authentication_error"
    assert "x-api-key" in missing.json()["error"]["message"]
    assert recorded_calls() == []


@pytest.mark.parametrize(
    ("change", "param"),
    [
        ({"model": "echo\x00model"}, "model"),
        ({"model": "m" * 101}, "model"),
        ({"model": 7}, "model"),
        ({"max_tokens": None}, "max_tokens"),
        ({"max_tokens": 2**31}, "max_tokens"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_tokens": True}, "max_tokens"),
        ({"max_tokens": "100"}, "max_tokens"),
        ({"max_tokens": 1.5}, "max_tokens"),
        ({"messages": []}, "messages"),
        ({"messages": "hello"}, "messages"),
        ({"messages": [{"role": "system", "content": "x"}]}, "messages.0.role"),
        ({"messages": [{"role": "user", "content": 5}]}, "messages.0.content"),
        ({"messages": [{"role": "user", "content": [{"type": "video"}]}]}, "messages.0.content.0"),
        ({"messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]}, "messages.0.content.0.text"),
        (
            {
                "messages": [
                    {"role": "assistant", "content": [{"type": "tool_use", "id": "t\x00", "name": "f", "input": {}}]}
                ]
            },
            "messages.0.content.0.id",
        ),
        ({"system": 5}, "system"),
        ({"system": [{"type": "image"}]}, "system.0"),
        ({"system": [{"type": "text", "text": "x", "cache_control": {"type": "forever"}}]}, "system.0.cache_control"),
        ({"tools": [{"name": "bad\x00name", "input_schema": {}}]}, "tools.0.name"),
        ({"tools": [{"name": "f"}]}, "tools.0.input_schema"),
        ({"tools": {"name": "f"}}, "tools"),
        ({"tool_choice": {"type": "sometimes"}}, "tool_choice"),
        ({"temperature": 1.5}, "temperature"),
        ({"top_p": "high"}, "top_p"),
        ({"top_k": -1}, "top_k"),
        ({"stop_sequences": ["a\x00"]}, "stop_sequences"),
        ({"stop_sequences": ["x"] * 65}, "stop_sequences"),
        ({"metadata": {"user_id": "u\x00"}}, "metadata.user_id"),
        ({"metadata": {"user_id": "u" * 257}}, "metadata.user_id"),
        ({"stream": "yes"}, "stream"),
    ],
)
def test_invalid_bodies_are_400_in_anthropics_shape(raw, fake_model, recorded_calls, change, param):
    fake_model("echo-model")
    body = {"model": "echo-model", "max_tokens": 10, "messages": HELLO, **change}
    body = {name: value for name, value in body.items() if value is not None}
    response = raw.post("/v1/messages", content=orjson.dumps(body))
    assert response.status_code == 400, response.text
    error = response.json()
    assert error["type"] == "error" and error["error"]["type"] == "invalid_request_error"
    assert f"Invalid '{param}'" in error["error"]["message"]
    assert response.headers["request-id"].startswith("req_")
    (call,) = recorded_calls()  # stored, like a refused chat completion (on PostgreSQL too)
    assert (call.status, call.http_status, call.error_code) == ("rejected", 400, "invalid_value")


@pytest.mark.parametrize(
    "body", [b"not json", b"[1, 2]", b'{"model": "echo-model", "max_tokens": 5, "messages": [\x00]}']
)
def test_unparsable_bodies_are_400(raw, body):
    response = raw.post("/v1/messages", content=body)
    assert response.status_code == 400 and response.json()["error"]["type"] == "invalid_request_error"


def test_body_over_the_limit_is_413_in_anthropics_shape(raw, settings):
    response = raw.post("/v1/messages", content=b"x" * (settings.ROUTERWEB_MAX_BODY_BYTES + 1))
    assert response.status_code == 413
    assert response.json()["error"]["type"] == "request_too_large"


def test_unknown_model_is_404(claude):
    with pytest.raises(anthropic.NotFoundError) as raised:
        claude.messages.create(model="no-such-model", max_tokens=5, messages=HELLO)
    assert raised.value.body["error"] == {
        "type": "not_found_error",
        "message": "The model or route 'no-such-model' does not exist.",
    }


def test_a_key_limited_to_other_models_is_403(claude, fake_model, user):
    fake_model("echo-model")
    ApiKey.objects.get(user=user).allowed_models.set([fake_model("other")])
    with pytest.raises(anthropic.PermissionDeniedError) as raised:
        claude.messages.create(model="echo-model", max_tokens=5, messages=HELLO)
    assert raised.value.body["error"]["type"] == "permission_error"


def test_upstream_400_is_passed_on_in_anthropics_shape(claude, fake_model):
    fake_model("bad-request", "echo+status=400")
    with pytest.raises(anthropic.BadRequestError) as raised:
        claude.messages.create(model="bad-request", max_tokens=5, messages=HELLO)
    assert raised.value.body["type"] == "error"
    assert raised.value.body["error"]["type"] == "invalid_request_error"
    assert "injected HTTP 400" in raised.value.body["error"]["message"]


def test_all_candidates_down_is_529_overloaded(claude, fake_model, recorded_calls):
    route_create("down", [fake_model("a", "echo+status=503"), fake_model("b", "echo+status=500")])
    with pytest.raises(anthropic.OverloadedError) as raised:
        claude.messages.create(model="down", max_tokens=5, messages=HELLO)
    assert raised.value.status_code == 529
    assert raised.value.body["error"]["type"] == "overloaded_error"
    assert "All candidates failed" in raised.value.body["error"]["message"]
    assert raised.value.response.headers["x-should-retry"] == "true"
    (call,) = recorded_calls()
    assert (call.status, call.http_status, call.error_code) == ("error", 502, "all_candidates_failed")


def test_fallback_to_the_next_candidate(claude, fake_model, recorded_calls):
    route_create("pair", [fake_model("down", "echo+status=503"), fake_model("up", "echo+words=2")])
    response = claude.messages.with_raw_response.create(model="pair", max_tokens=5, messages=HELLO)
    assert response.parse().content[0].text == "Echo: hello"
    assert response.headers["X-Router-Attempts"] == "2" and response.headers["X-Router-Model"] == "up"
    (call,) = recorded_calls()
    assert [a["outcome"] for a in call.attempts] == ["error", "ok"]


def test_stream_broken_after_content_ends_with_an_error_event(raw, fake_model, recorded_calls):
    fake_model("dropper", "echo+words=6+drop=2")
    body = {"model": "dropper", "max_tokens": 10, "messages": HELLO, "stream": True}
    events = sse_events(raw.post("/v1/messages", json=body))
    assert events[0][0] == "message_start" and events[-1][0] == "error"
    assert events[-1][1]["error"]["type"] == "api_error"
    (call,) = recorded_calls()
    assert (call.status, call.error_code) == ("error", "upstream_stream_failed")


# ---------------------------------------------------------------------------- budgets and rate limits


def test_budget_refusal_in_anthropics_shape(claude, fake_model, user, recorded_calls):
    fake_model("dear", "echo+words=1", price=(0, 1_000_000))  # $1 per output token
    budget_for(limit="5", user=user)
    assert claude.messages.create(model="dear", max_tokens=2, messages=HELLO).usage.output_tokens == 1
    with pytest.raises(anthropic.RateLimitError) as raised:
        claude.messages.create(model="dear", max_tokens=10, messages=HELLO)  # up to $10
    assert raised.value.body["error"]["type"] == "rate_limit_error"
    assert "could cost up to $10.00." in raised.value.body["error"]["message"]
    ok, refused = recorded_calls()
    assert (refused.status, refused.http_status, refused.error_code) == ("rejected", 429, "budget_exceeded")


def test_rate_limit_refusal_in_anthropics_shape(claude, fake_model, user):
    fake_model("echo-model", "echo+words=1")
    ApiKey.objects.filter(user=user).update(rpm_limit=1)
    claude.messages.create(model="echo-model", max_tokens=5, messages=HELLO)
    with pytest.raises(anthropic.RateLimitError) as raised:
        claude.messages.create(model="echo-model", max_tokens=5, messages=HELLO)
    assert raised.value.body["error"]["type"] == "rate_limit_error"
    assert int(raised.value.response.headers["Retry-After"]) >= 1


# ---------------------------------------------------------------------------- count_tokens


def test_count_tokens_is_estimated_locally_for_chat_completions_candidates(claude, fake_model):
    fake_model("echo-model")
    system = [{"type": "text", "text": "You are brief.", "cache_control": {"type": "ephemeral"}}]
    counted = claude.messages.count_tokens(model="echo-model", system=system, messages=HELLO, tools=TOOLS)
    translated = [{"role": "system", "content": "You are brief."}, *HELLO]
    tools_json = orjson.dumps(
        [
            {
                "type": "function",
                "function": {"name": t["name"], "parameters": t["input_schema"], "description": t["description"]},
            }
            for t in TOOLS
        ]
    )
    assert counted.input_tokens == prompt_tokens_estimate(translated) + -(-len(tools_json) // 4)


def test_count_tokens_errors(claude, gateway):
    with pytest.raises(anthropic.NotFoundError):
        claude.messages.count_tokens(model="nothing", messages=HELLO)
    with pytest.raises(anthropic.BadRequestError):
        claude.messages.count_tokens(model="nothing", messages=[])
    bad = anthropic.Anthropic(base_url=gateway.url, api_key="rw-wrong", max_retries=0)
    with pytest.raises(anthropic.AuthenticationError):
        bad.messages.count_tokens(model="nothing", messages=HELLO)


# ---------------------------------------------------------------------------- Anthropic candidates (native)


CLAUDE_SYSTEM = [{"type": "text", "text": "You are Claude Code.", "cache_control": {"type": "ephemeral"}}]


def test_native_message_passes_through(claude, anthropic_model, fake_upstream, recorded_calls):
    anthropic_model("claude-fake", "echo+words=5+cached=3", price=(3, 15))
    body = {"model": "claude-fake", "max_tokens": 50, "system": CLAUDE_SYSTEM, "messages": HELLO, "top_k": 5}
    response = claude.messages.with_raw_response.create(
        model="claude-fake", max_tokens=50, system=CLAUDE_SYSTEM, messages=HELLO, extra_body={"top_k": 5}
    )
    message = response.parse()
    assert message.id.startswith("msg_fake_") and message.content[0].text == ECHO_5
    assert (message.usage.input_tokens, message.usage.cache_read_input_tokens, message.usage.output_tokens) == (
        (4 + 3) + (2 + 3),
        3,
        5,
    )
    assert fake_upstream.app.stats()["last_request"] == {**body, "model": "echo+words=5+cached=3"}  # as sent
    headers = fake_upstream.app.stats()["last_headers"]
    assert headers["x-api-key"] == ANTHROPIC_KEY and headers["anthropic-version"]
    assert "anthropic-beta" not in headers
    (call,) = recorded_calls()
    assert (call.status, call.model.name) == ("ok", "claude-fake")
    assert (call.prompt_tokens, call.cached_tokens, call.completion_tokens, call.usage_estimated) == (15, 3, 5, False)
    assert call.cost_usd == Decimal(12 * 3 + 3 * 3 + 5 * 15) / 1_000_000  # cache reads at the input price here


def test_native_stream_passes_events_through(raw, claude, anthropic_model, recorded_calls):
    anthropic_model("claude-fake", "echo+words=3+cached=2", price=(1, 2))
    body = {"model": "claude-fake", "max_tokens": 50, "messages": HELLO, "stream": True}
    names = [name for name, _ in sse_events(raw.post("/v1/messages", json=body))]
    assert names == [
        "message_start",
        "content_block_start",
        "ping",
        "content_block_delta",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    with claude.messages.stream(model="claude-fake", max_tokens=50, messages=HELLO) as stream:
        assert "".join(stream.text_stream) == "Echo: hello router"
    first, second = recorded_calls()
    for call in (first, second):
        assert (call.status, call.stream, call.usage_estimated) == ("ok", True, False)
        assert (call.prompt_tokens, call.cached_tokens, call.completion_tokens) == (5 + 2, 2, 3)
        assert call.cost_usd == Decimal(7 * 1 + 3 * 2) / 1_000_000


def test_native_streamed_tool_use(claude, anthropic_model):
    anthropic_model("claude-fake", "echo+words=2+tool-use")
    with claude.messages.stream(
        model="claude-fake", max_tokens=50, messages=[{"role": "user", "content": "weather in Paris"}], tools=TOOLS
    ) as stream:
        final = stream.get_final_message()
    assert final.stop_reason == "tool_use"
    assert (final.content[1].name, final.content[1].input) == ("get_weather", {"echo": "Echo: weather"})


@pytest.mark.parametrize("stream", [False, True])
def test_fallback_from_anthropic_to_chat_completions(claude, anthropic_model, fake_model, recorded_calls, stream):
    overloaded = "echo+status=529" if not stream else "echo+stream-error=0"
    route_create("crossing", [anthropic_model("claude-down", overloaded), fake_model("gpt-up", "echo+words=2")])
    if stream:
        with claude.messages.stream(model="crossing", max_tokens=50, messages=HELLO) as events:
            text = "".join(events.text_stream)
    else:
        text = claude.messages.create(model="crossing", max_tokens=50, messages=HELLO).content[0].text
    assert text == "Echo: hello"
    (call,) = recorded_calls()
    assert call.model.name == "gpt-up" and [a["outcome"] for a in call.attempts] == ["error", "ok"]


def test_fallback_from_chat_completions_to_anthropic(claude, anthropic_model, fake_model, recorded_calls):
    route_create("back", [fake_model("gpt-down", "echo+status=503"), anthropic_model("claude-up", "echo+words=2")])
    message = claude.messages.create(model="back", max_tokens=50, messages=HELLO)
    assert message.content[0].text == "Echo: hello" and message.id.startswith("msg_fake_")
    (call,) = recorded_calls()
    assert call.model.name == "claude-up" and [a["outcome"] for a in call.attempts] == ["error", "ok"]


def test_anthropic_upstream_400_is_passed_on(claude, anthropic_model, recorded_calls):
    anthropic_model("claude-fake", "echo+status=400")
    with pytest.raises(anthropic.BadRequestError) as raised:
        claude.messages.create(model="claude-fake", max_tokens=50, messages=HELLO)
    assert raised.value.body["error"]["type"] == "invalid_request_error"
    assert "injected HTTP 400" in raised.value.body["error"]["message"]
    (call,) = recorded_calls()
    assert (call.status, call.http_status) == ("error", 400)


def test_native_stream_error_after_content(raw, anthropic_model, recorded_calls):
    anthropic_model("claude-fake", "echo+words=5+stream-error=2")
    body = {"model": "claude-fake", "max_tokens": 50, "messages": HELLO, "stream": True}
    events = sse_events(raw.post("/v1/messages", json=body))
    assert events[-1] == ("error", {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
    (call,) = recorded_calls()
    assert (call.status, call.error_code) == ("error", "upstream_stream_failed")


def test_hostile_usage_from_an_anthropic_upstream_is_estimated(claude, anthropic_model, recorded_calls):
    anthropic_model("claude-fake", "echo+words=2+bad-usage=huge", price=(1, 1))
    assert claude.messages.create(model="claude-fake", max_tokens=50, messages=HELLO).content[0].text == "Echo: hello"
    (call,) = recorded_calls()
    assert call.usage_estimated and call.prompt_tokens < 100


def test_count_tokens_by_an_anthropic_candidate(claude, anthropic_model):
    anthropic_model("claude-fake")
    counted = claude.messages.count_tokens(model="claude-fake", system="Be brief.", messages=HELLO)
    assert counted.input_tokens == (2 + 3) + (2 + 3)  # the fake's own count, not routerweb's estimate
    anthropic_model("claude-broken", "echo+status=500")
    estimated = claude.messages.count_tokens(model="claude-broken", system="Be brief.", messages=HELLO)
    assert estimated.input_tokens == prompt_tokens_estimate([{"role": "system", "content": "Be brief."}, *HELLO])


def test_anthropic_beta_header_reaches_anthropic_candidates_only(claude, anthropic_model, fake_model, fake_upstream):
    anthropic_model("claude-fake", "echo+words=2")
    fake_model("gpt-fake", "echo+words=2")
    beta = "claude-code-20250219, fine-grained-tool-streaming-2025-05-14"
    claude.messages.create(model="claude-fake", max_tokens=5, messages=HELLO, extra_headers={"anthropic-beta": beta})
    assert fake_upstream.app.stats()["last_headers"]["anthropic-beta"] == beta
    claude.messages.create(model="gpt-fake", max_tokens=5, messages=HELLO, extra_headers={"anthropic-beta": beta})
    assert "anthropic-beta" not in fake_upstream.app.stats()["last_headers"]
    with pytest.raises(anthropic.BadRequestError) as raised:
        claude.messages.create(
            model="claude-fake", max_tokens=5, messages=HELLO, extra_headers={"anthropic-beta": "a;b=c"}
        )
    assert "anthropic-beta" in raised.value.body["error"]["message"]


@pytest.mark.parametrize("stream", [False, True])
def test_four_token_classes_priced_exactly(claude, anthropic_model, recorded_calls, stream):
    """Claude Code's prompt cache through a native candidate: input, cache write, cache read and output
    each at its own rate (Decimal, every digit)."""
    model = anthropic_model("claude-cached", "echo+words=4+cached=1000+cache-write=333")
    claude_price_create(model)
    body = {"model": "claude-cached", "max_tokens": 50, "system": CLAUDE_SYSTEM, "messages": HELLO}
    if stream:
        with claude.messages.stream(**body) as events:
            usage = events.get_final_message().usage
    else:
        usage = claude.messages.create(**body).usage
    assert (usage.cache_creation_input_tokens, usage.cache_read_input_tokens, usage.output_tokens) == (333, 1000, 4)
    (call,) = recorded_calls()
    assert (call.prompt_tokens, call.cached_tokens, call.cache_write_tokens, call.completion_tokens) == (
        12 + 1000 + 333,
        1000,
        333,
        4,
    )
    expected = (12 * Decimal(3) + 1000 * Decimal("0.30") + 333 * Decimal("3.75") + 4 * Decimal(15)) / 1_000_000
    assert call.cost_usd == expected and not call.usage_estimated


def test_cache_counts_of_a_chat_completions_candidate_reach_the_message(claude, fake_model, recorded_calls):
    fake_model("cached-gpt", "echo+words=2+cached=1+cache-write=2")
    usage = claude.messages.create(model="cached-gpt", max_tokens=5, messages=HELLO).usage
    # the fake's prompt_tokens (5 + 2 written) include both cache counts; Anthropic's input_tokens do not
    assert (usage.input_tokens, usage.cache_read_input_tokens, usage.cache_creation_input_tokens) == (4, 1, 2)
    (call,) = recorded_calls()
    assert (call.prompt_tokens, call.cached_tokens, call.cache_write_tokens) == (7, 1, 2)


@pytest.mark.parametrize("stream", [False, True])
def test_bodies_of_messages_calls_are_stored_when_asked(claude, fake_model, recorded_calls, stream):
    from billing.body_models import BodyStorage, BodyStorageRule
    from billing.call_bodies import call_body_for

    BodyStorageRule.objects.create(storage=BodyStorage.ALL)
    fake_model("echo-model", "echo+words=5", price=(1, 2))
    if stream:
        with claude.messages.stream(model="echo-model", max_tokens=100, messages=HELLO) as events:
            "".join(events.text_stream)
    else:
        claude.messages.create(model="echo-model", max_tokens=100, messages=HELLO)
    (call,) = recorded_calls()
    body = call_body_for(call.request_id)
    assert body is not None and body.messages == HELLO
    assert body.answer == ECHO_5
