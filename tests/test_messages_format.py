"""The pure parts of /v1/messages: the Messages ↔ chat completions translation, the stream translator
and Anthropic's error shape (the live path is tests/test_messages_api.py)."""

import orjson
import pytest

from routing.errors import ApiError, anthropic_error_answer
from routing.messages_format import chat_body_from_messages, message_from_completion, usage_fields
from routing.messages_schema import messages_request_parse
from routing.messages_stream import ChunkTranslator
from routing.providers.anthropic_format import tool_input
from routing.usage import Usage, UsageProblem


def parse(**body):
    return messages_request_parse(orjson.dumps({"model": "m", "max_tokens": 10, **body}))


def test_images_documents_and_tool_choices_are_translated():
    png = {"type": "base64", "media_type": "image/png", "data": "iVBO"}
    pdf = {"type": "base64", "media_type": "application/pdf", "data": "JVBE"}
    content = [
        {"type": "image", "source": png},
        {"type": "image", "source": {"type": "url", "url": "https://example.test/a.png"}},
        {"type": "document", "source": pdf, "title": "spec.pdf"},
        {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "plain"}},
        {"type": "thinking", "thinking": "hmm", "signature": "s"},
    ]
    tools = [{"name": "f", "input_schema": {"type": "object"}}, {"type": "web_search_20250305", "name": "web_search"}]
    chat = chat_body_from_messages(
        {
            "model": "m",
            "max_tokens": 10,
            "messages": [{"role": "user", "content": content}],
            "tools": tools,
            "tool_choice": {"type": "tool", "name": "f", "disable_parallel_tool_use": True},
            "top_k": 3,
        }
    )
    assert chat["messages"][0]["content"] == [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBO"}},
        {"type": "image_url", "image_url": {"url": "https://example.test/a.png"}},
        {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBE", "filename": "spec.pdf"}},
        {"type": "text", "text": "plain"},
    ]
    assert chat["tools"] == [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    assert chat["tool_choice"] == {"type": "function", "function": {"name": "f"}}
    assert chat["parallel_tool_calls"] is False and "top_k" not in chat


def test_tool_results_become_tool_messages_before_the_users_text():
    messages = [
        {"role": "user", "content": "go"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "f", "input": {"x": 1}}]},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "and then"},
                {
                    "type": "tool_result",
                    "tool_use_id": "t1",
                    "content": [{"type": "text", "text": "boom"}],
                    "is_error": True,
                },
            ],
        },
    ]
    chat = parse(messages=messages).body
    assert chat["messages"][1] == {
        "role": "assistant",
        "content": None,
        "tool_calls": [{"id": "t1", "type": "function", "function": {"name": "f", "arguments": '{"x":1}'}}],
    }
    assert chat["messages"][2:] == [
        {"role": "tool", "tool_call_id": "t1", "content": "Error: boom"},
        {"role": "user", "content": [{"type": "text", "text": "and then"}]},
    ]


def test_a_request_carries_its_translation_for_limits_and_budgets():
    request = parse(messages=[{"role": "user", "content": "hi"}], stream=True)
    assert (request.model, request.stream, request.max_tokens, request.choices, request.fallback_models) == (
        "m",
        True,
        10,
        1,
        [],
    )
    assert request.native["messages"] == [{"role": "user", "content": "hi"}]
    assert request.body["messages"] == [{"role": "user", "content": "hi"}]


def test_completion_to_message_with_odd_tool_arguments():
    completion = {
        "model": "gpt",
        "choices": [
            {
                "message": {
                    "content": "",
                    "tool_calls": [
                        {"id": "c1", "function": {"name": "f", "arguments": '{"a": 1}'}},
                        {"id": "c2", "function": {"name": "g", "arguments": "not json"}},
                        {"id": "c3", "function": {"name": "h", "arguments": "[1]"}},
                    ],
                },
                "finish_reason": "tool_calls",
            }
        ],
    }
    message = message_from_completion(completion, message_id="msg_1", model="gpt", usage=Usage(10, 4, 2, cache_write=3))
    assert [block["input"] for block in message["content"]] == [
        {"a": 1},
        {"arguments": "not json"},
        {"arguments": "[1]"},
    ]
    assert message["stop_reason"] == "tool_use" and message["content"][0]["type"] == "tool_use"
    assert message["usage"] == {
        "input_tokens": 3,
        "output_tokens": 2,
        "cache_creation_input_tokens": 3,
        "cache_read_input_tokens": 4,
    }
    assert usage_fields(UsageProblem("no_usage")) == {"input_tokens": 0, "output_tokens": 0}
    assert tool_input(None) == {}


def events_of(translator, payloads, usage=Usage(5, 0, 3)):
    out = []
    for payload in payloads:
        for event in translator.events(payload, usage):
            name, data = event.decode().strip().split("\n")
            out.append(orjson.loads(data.removeprefix("data: ")))
    return out


def chunk(delta, finish=None):
    return orjson.dumps({"model": "gpt", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})


def test_stream_translator_opens_a_block_per_kind_and_per_tool_call():
    calls = [
        chunk({"role": "assistant", "content": ""}),
        chunk({"content": "Hi"}),
        chunk({"tool_calls": [{"index": 0, "id": "c1", "function": {"name": "f", "arguments": '{"a"'}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": ":1}"}}]}),
        chunk({"tool_calls": [{"index": 1, "id": "c2", "function": {"name": "g", "arguments": "{}"}}]}),
        chunk({}, "tool_calls"),
        b"[DONE]",
        chunk({"content": "after the end"}),
    ]
    events = events_of(ChunkTranslator(message_id="msg_1", model="m"), calls)
    assert [(e["type"], e.get("index")) for e in events] == [
        ("message_start", None),
        ("content_block_start", 0),
        ("content_block_delta", 0),
        ("content_block_stop", 0),
        ("content_block_start", 1),
        ("content_block_delta", 1),
        ("content_block_delta", 1),
        ("content_block_stop", 1),
        ("content_block_start", 2),
        ("content_block_delta", 2),
        ("content_block_stop", 2),
        ("message_delta", None),
        ("message_stop", None),
    ]
    assert events[0]["message"]["model"] == "gpt"
    assert events[4]["content_block"] == {"type": "tool_use", "id": "c1", "name": "f", "input": {}}
    assert events[-2]["delta"]["stop_reason"] == "tool_use" and events[-2]["usage"]["output_tokens"] == 3


@pytest.mark.parametrize("payload", [b"not json", b"[1]", b'{"choices": "x"}', b'{"choices": [{"delta": 5}]}'])
def test_stream_translator_ignores_odd_chunks(payload):
    events = events_of(ChunkTranslator(message_id="msg_1", model="m"), [payload, b"[DONE]"])
    assert [e["type"] for e in events][-2:] == ["message_delta", "message_stop"]


def test_stream_translator_turns_an_error_chunk_into_an_error_event():
    error = orjson.dumps({"error": {"message": "upstream stream failed: boom", "type": "server_error"}})
    events = events_of(ChunkTranslator(message_id="msg_1", model="m"), [chunk({"content": "x"}), error, b"[DONE]"])
    assert events[-1] == {"type": "error", "error": {"type": "api_error", "message": "upstream stream failed: boom"}}


@pytest.mark.parametrize(
    ("error", "status", "error_type"),
    [
        (ApiError(400, "bad"), 400, "invalid_request_error"),
        (ApiError(401, "who"), 401, "authentication_error"),
        (ApiError(403, "no"), 403, "permission_error"),
        (ApiError(404, "none"), 404, "not_found_error"),
        (ApiError(413, "big"), 413, "request_too_large"),
        (ApiError(429, "slow down", retry_after_s=3), 429, "rate_limit_error"),
        (ApiError(500, "ours"), 500, "api_error"),
        (ApiError(502, "all failed", retry_after_s=1), 529, "overloaded_error"),
        (ApiError(502, "all skipped"), 500, "api_error"),
        (ApiError(503, "database down", retry_after_s=1), 529, "overloaded_error"),
    ],
)
def test_anthropic_error_shape(error, status, error_type):
    assert anthropic_error_answer(error) == (
        status,
        orjson.dumps({"type": "error", "error": {"type": error_type, "message": error.message}}),
    )
