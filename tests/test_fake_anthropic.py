"""Tests for the fake upstream's Anthropic mode, with the official `anthropic` SDK as the client."""

from __future__ import annotations

from collections.abc import Iterator

import anthropic
import httpx
import pytest

from testkit.live import LiveServer

MESSAGES = [{"role": "user", "content": "hello there world"}]
SYSTEM = "You are terse."
# system: 3 words + 3, user: 3 words + 3
INPUT_TOKENS = 12


@pytest.fixture
def sdk(fake_upstream: LiveServer) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=fake_upstream.url, api_key="k", max_retries=0, timeout=5.0)


@pytest.fixture
def http(fake_upstream: LiveServer) -> Iterator[httpx.Client]:
    headers = {"x-api-key": "k", "anthropic-version": "2023-06-01"}
    with httpx.Client(base_url=fake_upstream.url + "/v1", headers=headers, timeout=5.0) as client:
        yield client


def test_a_message_has_the_messages_api_shape_and_all_four_token_classes(sdk):
    message = sdk.messages.create(
        model="claude+cached=40+cache-write=7", max_tokens=100, system=SYSTEM, messages=MESSAGES
    )
    assert message.type == "message" and message.role == "assistant"
    assert message.content[0].text == "Echo: hello there world lorem ipsum dolor sit"
    assert message.stop_reason == "end_turn"
    assert message.usage.input_tokens == INPUT_TOKENS
    assert message.usage.cache_read_input_tokens == 40
    assert message.usage.cache_creation_input_tokens == 7
    assert message.usage.output_tokens == 8


def test_the_answer_is_cut_at_max_tokens(sdk):
    message = sdk.messages.create(model="claude+words=8", max_tokens=3, messages=MESSAGES)
    assert message.content[0].text == "Echo: hello there"
    assert message.stop_reason == "max_tokens"
    assert message.usage.output_tokens == 3


def test_a_stream_sends_the_real_event_sequence(sdk):
    with sdk.messages.stream(model="claude+words=3+cache-write=2", max_tokens=50, messages=MESSAGES) as stream:
        types = [event.type for event in stream]
        final = stream.get_final_message()
    assert types[0] == "message_start"
    assert types[-1] == "message_stop"
    assert "content_block_start" in types and "content_block_stop" in types and "message_delta" in types
    assert final.content[0].text == "Echo: hello there"
    assert final.usage.output_tokens == 3
    assert final.usage.input_tokens == 6
    assert final.usage.cache_creation_input_tokens == 2


def test_tool_use_streams_input_json_deltas_and_reads_tool_results(sdk):
    tools = [{"name": "lookup", "description": "d", "input_schema": {"type": "object"}}]
    with sdk.messages.stream(model="claude+tool-use+words=2", max_tokens=50, messages=MESSAGES, tools=tools) as s:
        events = list(s)
        final = s.get_final_message()
    assert any(e.type == "content_block_delta" and e.delta.type == "input_json_delta" for e in events)
    assert final.stop_reason == "tool_use"
    tool = final.content[1]
    assert tool.type == "tool_use" and tool.name == "lookup" and tool.input == {"echo": "Echo: hello"}
    follow_up = [
        *MESSAGES,
        {"role": "assistant", "content": [{"type": "tool_use", "id": tool.id, "name": "lookup", "input": tool.input}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": tool.id, "content": "forty two"}]},
    ]
    answer = sdk.messages.create(model="claude+words=3", max_tokens=50, messages=follow_up, tools=tools)
    assert answer.content[0].text == "Echo: forty two"


@pytest.mark.parametrize(
    ("status", "error_class", "error_type"),
    [
        (400, anthropic.BadRequestError, "invalid_request_error"),
        (401, anthropic.AuthenticationError, "authentication_error"),
        (429, anthropic.RateLimitError, "rate_limit_error"),
        (500, anthropic.InternalServerError, "api_error"),
        (529, anthropic.InternalServerError, "overloaded_error"),
    ],
)
def test_injected_errors_have_anthropics_shape(sdk, status, error_class, error_type):
    with pytest.raises(error_class) as raised:
        sdk.messages.create(model=f"claude+status={status}", max_tokens=10, messages=MESSAGES)
    assert raised.value.status_code == status
    assert raised.value.body["type"] == "error"
    assert raised.value.body["error"]["type"] == error_type


def test_an_error_event_mid_stream_reaches_the_sdk(sdk):
    model = "claude+stream-error=2"
    with (
        pytest.raises(anthropic.APIStatusError, match="Overloaded"),
        sdk.messages.stream(model=model, max_tokens=10, messages=MESSAGES) as stream,
    ):
        list(stream)


def test_headers_and_required_fields_are_checked(http):
    body = {"model": "claude", "max_tokens": 5, "messages": MESSAGES}
    no_key = http.post("/messages", json=body, headers={"x-api-key": "", "authorization": ""})
    assert no_key.status_code == 401 and no_key.json()["error"]["type"] == "authentication_error"
    no_version = http.post("/messages", json=body, headers={"anthropic-version": ""})
    assert no_version.status_code == 400 and "anthropic-version" in no_version.json()["error"]["message"]
    no_max_tokens = http.post("/messages", json={"model": "claude", "messages": MESSAGES})
    assert no_max_tokens.status_code == 400 and "max_tokens" in no_max_tokens.json()["error"]["message"]
    typo = http.post("/messages", json={**body, "model": "claude+bad-usage=weird"})
    assert typo.status_code == 400 and typo.json()["type"] == "error"


def test_hostile_usage_and_odd_events(http):
    body = {"model": "claude+bad-usage=huge", "max_tokens": 5, "messages": MESSAGES}
    assert http.post("/messages", json=body).json()["usage"]["input_tokens"] == 2**40
    stream = http.post("/messages", json={**body, "model": "claude+odd-events+words=1", "stream": True})
    assert "event: mystery" in stream.text and stream.text.rstrip().endswith('{"type":"message_stop"}')
