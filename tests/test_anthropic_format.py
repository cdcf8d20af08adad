"""Unit tests of the pure OpenAI <-> Anthropic Messages API translation (no server, no database)."""

import pytest

from routing.providers.anthropic_format import (
    DEFAULT_MAX_TOKENS,
    anthropic_message_to_openai,
    finish_reason,
    openai_request_to_anthropic,
)
from routing.providers.anthropic_stream import AnthropicStreamMapper
from routing.usage import Usage, UsageProblem, anthropic_usage_parse


def to_anthropic(request, *, model_max_tokens=None):
    return openai_request_to_anthropic(request, upstream_model="claude-x", model_max_tokens=model_max_tokens)


def test_system_and_developer_messages_become_the_system_prompt():
    body = to_anthropic(
        {
            "messages": [
                {"role": "system", "content": "Be terse."},
                {"role": "developer", "content": [{"type": "text", "text": "Use French."}]},
                {"role": "user", "content": "hi"},
            ]
        }
    )
    assert body == {
        "model": "claude-x",
        "max_tokens": DEFAULT_MAX_TOKENS,
        "system": "Be terse.\n\nUse French.",
        "messages": [{"role": "user", "content": "hi"}],
    }


def test_cache_control_on_a_system_part_keeps_the_system_as_blocks():
    marked = {"type": "text", "text": "Long rules.", "cache_control": {"type": "ephemeral"}}
    body = to_anthropic({"messages": [{"role": "system", "content": [marked]}, {"role": "user", "content": "q"}]})
    assert body["system"] == [marked]


def test_max_tokens_comes_from_the_request_then_the_model_then_the_default():
    messages = [{"role": "user", "content": "q"}]
    assert to_anthropic({"messages": messages, "max_tokens": 5, "max_completion_tokens": 9})["max_tokens"] == 9
    assert to_anthropic({"messages": messages}, model_max_tokens=321)["max_tokens"] == 321
    assert to_anthropic({"messages": messages})["max_tokens"] == DEFAULT_MAX_TOKENS


def test_consecutive_turns_of_one_role_are_merged_and_tool_results_join_a_user_turn():
    body = to_anthropic(
        {
            "messages": [
                {"role": "user", "content": "a"},
                {"role": "user", "content": "b"},
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {"id": "t1", "type": "function", "function": {"name": "f", "arguments": '{"x": 1}'}},
                        {"id": "t2", "type": "function", "function": {"name": "g", "arguments": "not json"}},
                    ],
                },
                {"role": "tool", "tool_call_id": "t1", "content": "one"},
                {"role": "tool", "tool_call_id": "t2", "content": [{"type": "text", "text": "two"}]},
            ]
        }
    )
    assert body["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
        {
            "role": "assistant",
            "content": [
                {"type": "tool_use", "id": "t1", "name": "f", "input": {"x": 1}},
                {"type": "tool_use", "id": "t2", "name": "g", "input": {"arguments": "not json"}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "t1", "content": "one"},
                {"type": "tool_result", "tool_use_id": "t2", "content": [{"type": "text", "text": "two"}]},
            ],
        },
    ]


@pytest.mark.parametrize(
    ("choice", "parallel", "expected"),
    [
        ("auto", None, {"type": "auto"}),
        ("required", None, {"type": "any"}),
        ("none", False, {"type": "none"}),
        ({"type": "function", "function": {"name": "f"}}, None, {"type": "tool", "name": "f"}),
        (None, False, {"type": "auto", "disable_parallel_tool_use": True}),
        ("required", False, {"type": "any", "disable_parallel_tool_use": True}),
        (None, None, None),
    ],
)
def test_tool_choice(choice, parallel, expected):
    request = {
        "messages": [{"role": "user", "content": "q"}],
        "tools": [{"type": "function", "function": {"name": "f"}}],
    }
    if choice is not None:
        request["tool_choice"] = choice
    if parallel is not None:
        request["parallel_tool_calls"] = parallel
    body = to_anthropic(request)
    assert body["tools"] == [{"name": "f", "input_schema": {"type": "object", "properties": {}}}]
    assert body.get("tool_choice") == expected


def test_stop_temperature_and_stream():
    body = to_anthropic(
        {"messages": [{"role": "user", "content": "q"}], "stop": ["x", "y"], "temperature": 0.2, "stream": True}
    )
    assert (body["stop_sequences"], body["temperature"], body["stream"]) == (["x", "y"], 0.2, True)


def test_a_message_becomes_a_chat_completion():
    completion, usage = anthropic_message_to_openai(
        {
            "id": "msg_1",
            "model": "claude-x",
            "content": [
                {"type": "text", "text": "Hi "},
                {"type": "thinking", "thinking": "hidden"},
                {"type": "text", "text": "there"},
                {"type": "tool_use", "id": "t1", "name": "f", "input": {"a": [1]}},
            ],
            "stop_reason": "tool_use",
            "usage": {
                "input_tokens": 10,
                "output_tokens": 4,
                "cache_read_input_tokens": 100,
                "cache_creation_input_tokens": 20,
            },
        }
    )
    assert usage == Usage(prompt=130, cached=100, completion=4, cache_write=20)
    assert completion["id"] == "chatcmpl-msg_1" and completion["model"] == "claude-x"
    [choice] = completion["choices"]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"] == {
        "role": "assistant",
        "content": "Hi there",
        "tool_calls": [{"id": "t1", "type": "function", "function": {"name": "f", "arguments": '{"a":[1]}'}}],
    }
    assert completion["usage"] == {
        "prompt_tokens": 130,
        "completion_tokens": 4,
        "total_tokens": 134,
        "prompt_tokens_details": {"cached_tokens": 100, "cache_write_tokens": 20},
    }


def test_a_message_with_hostile_fields_keeps_only_what_is_sane():
    completion, usage = anthropic_message_to_openai(
        {"id": 5, "model": "m\x00" * 300, "content": [7, {"type": "text", "text": 3}], "usage": {"input_tokens": -1}}
    )
    assert usage == UsageProblem("invalid_usage:input_tokens")
    assert "usage" not in completion
    assert completion["id"] == "chatcmpl-anthropic" and "\x00" not in completion["model"]
    assert len(completion["model"]) == 200
    assert completion["choices"][0]["message"]["content"] == ""


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (None, UsageProblem("no_usage")),
        ([], UsageProblem("invalid_usage")),
        ({"output_tokens": 1}, UsageProblem("invalid_usage:input_tokens")),
        ({"input_tokens": 1}, UsageProblem("invalid_usage:output_tokens")),
        ({"input_tokens": 1, "output_tokens": True}, UsageProblem("invalid_usage:output_tokens")),
        ({"input_tokens": 1, "output_tokens": 1.0}, UsageProblem("invalid_usage:output_tokens")),
        (
            {"input_tokens": 1, "output_tokens": 1, "cache_read_input_tokens": "9"},
            UsageProblem("invalid_usage:cache_read_tokens"),
        ),
        (
            {"input_tokens": 1, "output_tokens": 1, "cache_creation_input_tokens": 2**31},
            UsageProblem("invalid_usage:cache_write_tokens"),
        ),
        (
            {"input_tokens": 2**31 - 1, "output_tokens": 1, "cache_read_input_tokens": 1},
            UsageProblem("invalid_usage:prompt_tokens"),
        ),
        (
            {"input_tokens": 3, "output_tokens": 2, "cache_read_input_tokens": None},
            Usage(prompt=3, cached=0, completion=2, cache_write=0),
        ),
    ],
)
def test_anthropic_usage_parse(raw, expected):
    assert anthropic_usage_parse(raw) == expected
    if isinstance(expected, UsageProblem):
        assert len(expected.reason) <= 40


def test_finish_reasons():
    assert [finish_reason(r) for r in ("end_turn", "max_tokens", "tool_use", "refusal", "new_one", 5, None)] == [
        "stop",
        "length",
        "tool_calls",
        "content_filter",
        "stop",
        "stop",
        None,
    ]


def test_the_stream_mapper_follows_the_event_sequence():
    mapper = AnthropicStreamMapper()
    events = [
        {
            "type": "message_start",
            "message": {
                "id": "msg_9",
                "model": "claude-x",
                "usage": {"input_tokens": 5, "output_tokens": 1, "cache_read_input_tokens": 7},
            },
        },
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "ping"},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hi"}},
        {"type": "content_block_stop", "index": 0},
        {
            "type": "content_block_start",
            "index": 1,
            "content_block": {"type": "tool_use", "id": "t", "name": "f", "input": {}},
        },
        {"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": '{"a"'}},
        {"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": ":1}"}},
        {"type": "content_block_delta", "index": 9, "delta": {"type": "input_json_delta", "partial_json": "lost"}},
        {"type": "surprise"},
        {"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 6}},
    ]
    deltas = []
    for event in events:
        for chunk in mapper.chunks(event):
            assert chunk["id"] == "chatcmpl-msg_9" and chunk["object"] == "chat.completion.chunk"
            deltas.append((chunk["choices"][0]["delta"], chunk["choices"][0]["finish_reason"]))
    assert mapper.usage() == Usage(prompt=12, cached=7, completion=6, cache_write=0)
    assert deltas == [
        ({"role": "assistant", "content": ""}, None),
        ({"content": "Hi"}, None),
        (
            {"tool_calls": [{"index": 0, "id": "t", "type": "function", "function": {"name": "f", "arguments": ""}}]},
            None,
        ),
        ({"tool_calls": [{"index": 0, "function": {"arguments": '{"a"'}}]}, None),
        ({"tool_calls": [{"index": 0, "function": {"arguments": ":1}"}}]}, None),
        ({}, "tool_calls"),
    ]
    assert not mapper.finished
    assert mapper.chunks({"type": "message_stop"}) == [] and mapper.finished
    assert mapper.usage_chunk(mapper.usage())["usage"]["prompt_tokens_details"] == {
        "cached_tokens": 7,
        "cache_write_tokens": 0,
    }


def test_the_stream_mapper_notes_an_error_event_and_has_no_usage_before_message_delta():
    mapper = AnthropicStreamMapper()
    mapper.chunks({"type": "message_start", "message": {"usage": {"input_tokens": 5, "output_tokens": 1}}})
    assert mapper.usage() == UsageProblem("no_usage")
    mapper.chunks({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
    assert mapper.error == ("overloaded_error", "Overloaded")


@pytest.mark.parametrize(
    ("details", "expected"),
    [
        ({"cached_tokens": 3, "cache_write_tokens": 4}, Usage(prompt=10, cached=3, completion=1, cache_write=4)),
        ({"cached_tokens": 8, "cache_write_tokens": 4}, Usage(prompt=10, cached=8, completion=1, cache_write=2)),
        ({"cache_write_tokens": -1}, UsageProblem("invalid_usage:cache_write_tokens")),
        ({"cache_write_tokens": None}, Usage(prompt=10, cached=0, completion=1, cache_write=0)),
    ],
)
def test_openai_usage_reads_cache_writes_from_prompt_tokens_details(details, expected):
    from routing.usage import usage_parse

    assert usage_parse({"prompt_tokens": 10, "completion_tokens": 1, "prompt_tokens_details": details}) == expected


def test_empty_messages_are_left_out_and_their_neighbours_merge():
    body = to_anthropic(
        {
            "messages": [
                {"role": "user", "content": "a"},
                {"role": "assistant", "content": ""},
                {"role": "user", "content": [{"type": "text", "text": "b"}]},
            ]
        }
    )
    assert body["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}
    ]
