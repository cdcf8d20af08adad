"""Tests for the fake OpenAI-compatible upstream (no database, no Django needed)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from testkit.fake_upstream import FakeUpstream, answer_words, parse_model, prompt_tokens
from testkit.live import LiveServer, free_port, serve_asgi

MESSAGES = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "hello there world"},
]
# system: 3 words + 3, user: 3 words + 3
PROMPT_TOKENS = 12
EXPECTED_TEXT = "Echo: hello there world lorem ipsum dolor sit"


@pytest.fixture(scope="module")
def server() -> Iterator[LiveServer]:
    live = serve_asgi(FakeUpstream(prefix="/v1"))
    yield live
    live.stop()


@pytest.fixture
def base_url(server: LiveServer) -> str:
    return server.url + "/v1"


@pytest.fixture
def client(base_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base_url, timeout=5.0) as http:
        http.post("/_fake/reset").raise_for_status()
        yield http


@pytest.fixture
def sdk(base_url: str, client: httpx.Client) -> openai.OpenAI:
    return openai.OpenAI(base_url=base_url, api_key="x", max_retries=0, timeout=5.0)


def chat(client: httpx.Client, model: str, **extra: Any) -> httpx.Response:
    return client.post("/chat/completions", json={"model": model, "messages": MESSAGES, **extra})


def sse_events(lines: list[str]) -> list[str]:
    return [line.removeprefix("data: ") for line in lines if line.startswith("data: ")]


def stream_events(client: httpx.Client, model: str, **extra: Any) -> list[str]:
    with client.stream(
        "POST", "/chat/completions", json={"model": model, "messages": MESSAGES, "stream": True, **extra}
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        return sse_events(list(response.iter_lines()))


def wait_for_stats(client: httpx.Client, key: str, value: int, timeout: float = 3.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        stats = client.get("/_fake/stats").json()
        if stats[key] == value or time.monotonic() > deadline:
            return stats
        time.sleep(0.02)


def assert_openai_error(response: httpx.Response, status: int, type_: str) -> dict[str, Any]:
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == type_
    assert isinstance(error["message"], str) and error["message"]
    return error


# --- pure helpers -------------------------------------------------------------------------------


def test_answer_words_pads_and_truncates() -> None:
    assert answer_words(MESSAGES, 3) == ["Echo:", "hello", "there"]
    assert answer_words(MESSAGES, 0) == []
    assert " ".join(answer_words(MESSAGES, 8)) == EXPECTED_TEXT
    assert answer_words([], 2) == ["Echo:", "lorem"]
    parts = [{"role": "user", "content": [{"type": "text", "text": "from parts"}]}]
    assert answer_words(parts, 3) == ["Echo:", "from", "parts"]


def test_prompt_tokens_rule() -> None:
    assert prompt_tokens(MESSAGES) == PROMPT_TOKENS
    assert prompt_tokens([{"role": "assistant", "content": None}]) == 3


def test_parse_model_directives() -> None:
    plan = parse_model("gpt-4o+status=429+retry-after=2+ttft=100+chunk-delay=5+words=3+cached=7+nousage")
    assert plan.status == 429
    assert plan.headers == [(b"retry-after", b"2")]
    assert plan.latency == pytest.approx(0.1)
    assert plan.chunk_delay == pytest.approx(0.005)
    assert (plan.words, plan.cached, plan.usage) == (3, 7, False)
    for bad in ("echo+bogus", "echo+status=200", "echo+words=x", "echo+latency=-1"):
        with pytest.raises(ValueError):
            parse_model(bad)


# --- normal replies -----------------------------------------------------------------------------


def test_non_stream_reply_shape_and_usage(client: httpx.Client) -> None:
    response = chat(client, "echo")
    assert response.status_code == 200
    body = response.json()
    assert body["object"] == "chat.completion"
    assert body["model"] == "echo"
    assert body["id"].startswith("chatcmpl-")
    assert isinstance(body["created"], int)
    assert body["choices"] == [
        {"index": 0, "message": {"role": "assistant", "content": EXPECTED_TEXT}, "finish_reason": "stop"}
    ]
    assert body["usage"] == {
        "prompt_tokens": PROMPT_TOKENS,
        "completion_tokens": 8,
        "total_tokens": PROMPT_TOKENS + 8,
        "prompt_tokens_details": {"cached_tokens": 0},
    }


def test_words_directive_and_sdk(sdk: openai.OpenAI) -> None:
    completion = sdk.chat.completions.create(model="demo-echo+words=20", messages=MESSAGES)
    content = completion.choices[0].message.content
    assert content is not None and len(content.split(" ")) == 20
    assert content.startswith("Echo: hello there world ")
    assert completion.model == "demo-echo+words=20"
    assert completion.usage is not None and completion.usage.completion_tokens == 20


def test_models_endpoint(client: httpx.Client, sdk: openai.OpenAI) -> None:
    assert client.get("/models").json() == {
        "object": "list",
        "data": [{"id": "echo", "object": "model", "created": 0, "owned_by": "routerweb-fake"}],
    }
    assert [model.id for model in sdk.models.list()] == ["echo"]


def test_determinism(client: httpx.Client) -> None:
    first, second = chat(client, "echo+words=12").json(), chat(client, "echo+words=12").json()
    assert first["choices"] == second["choices"]
    assert first["usage"] == second["usage"]
    assert {k: v for k, v in first.items() if k != "id"} == {k: v for k, v in second.items() if k != "id"}


# --- streaming ----------------------------------------------------------------------------------


def test_stream_with_sdk_and_usage(sdk: openai.OpenAI) -> None:
    chunks = list(
        sdk.chat.completions.create(
            model="echo", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
        )
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[0].choices[0].delta.content == ""
    content_chunks = chunks[1:-2]
    assert len(content_chunks) == 8
    assert "".join(c.choices[0].delta.content or "" for c in content_chunks) == EXPECTED_TEXT
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.prompt_tokens == PROMPT_TOKENS
    assert chunks[-1].usage.total_tokens == PROMPT_TOKENS + 8


def test_stream_without_include_usage(client: httpx.Client) -> None:
    events = stream_events(client, "echo+words=3")
    assert events[-1] == "[DONE]"
    chunks = [json.loads(event) for event in events[:-1]]
    assert len(chunks) == 1 + 3 + 1
    assert all("usage" not in chunk for chunk in chunks)
    assert all(chunk["object"] == "chat.completion.chunk" for chunk in chunks)
    assert [c["choices"][0]["delta"].get("content") for c in chunks[1:4]] == ["Echo:", " hello", " there"]
    assert chunks[-1]["choices"][0] == {"index": 0, "delta": {}, "finish_reason": "stop"}


def test_stream_chunks_arrive_incrementally(client: httpx.Client) -> None:
    arrivals: list[float] = []
    body = {"model": "echo+chunk-delay=50+words=5", "messages": MESSAGES, "stream": True}
    with client.stream("POST", "/chat/completions", json=body) as response:
        for line in response.iter_lines():
            if '"content":"' in line and '"role"' not in line:
                arrivals.append(time.perf_counter())
    assert len(arrivals) == 5
    gaps = [later - earlier for earlier, later in zip(arrivals, arrivals[1:], strict=False)]
    assert min(gaps) >= 0.04, gaps


def test_stream_matches_non_stream_content(client: httpx.Client) -> None:
    events = stream_events(client, "echo+words=11")
    text = "".join(json.loads(e)["choices"][0]["delta"].get("content", "") for e in events[1:-2])
    assert text == chat(client, "echo+words=11").json()["choices"][0]["message"]["content"]


# --- fault injection ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "type_", "code"),
    [
        (500, "server_error", "server_error"),
        (503, "server_error", "server_error"),
        (400, "invalid_request_error", None),
        (401, "authentication_error", "invalid_api_key"),
        (403, "permission_error", "permission_denied"),
        (404, "invalid_request_error", "model_not_found"),
        (422, "invalid_request_error", None),
    ],
)
def test_status_directive(client: httpx.Client, status: int, type_: str, code: str | None) -> None:
    error = assert_openai_error(chat(client, f"echo+status={status}"), status, type_)
    assert error["code"] == code
    assert error["param"] is None
    # streaming requests get the same error response instead of a stream
    assert_openai_error(chat(client, f"echo+status={status}", stream=True), status, type_)


def test_rate_limit_with_retry_after(client: httpx.Client, sdk: openai.OpenAI) -> None:
    response = chat(client, "echo+status=429+retry-after=2")
    assert_openai_error(response, 429, "rate_limit_error")
    assert response.headers["retry-after"] == "2"
    with pytest.raises(openai.RateLimitError):
        sdk.chat.completions.create(model="echo+status=429+retry-after=2", messages=MESSAGES)


def test_sdk_maps_server_error(sdk: openai.OpenAI) -> None:
    with pytest.raises(openai.InternalServerError):
        sdk.chat.completions.create(model="echo+status=500", messages=MESSAGES)
    with pytest.raises(openai.AuthenticationError):
        sdk.chat.completions.create(model="echo+status=401", messages=MESSAGES)


def test_malformed(client: httpx.Client) -> None:
    response = chat(client, "echo+malformed")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    with pytest.raises(json.JSONDecodeError):
        json.loads(response.content)


def test_hang_times_out_and_counts_as_cancelled(client: httpx.Client) -> None:
    with pytest.raises(httpx.ReadTimeout):
        client.post("/chat/completions", json={"model": "echo+hang", "messages": MESSAGES}, timeout=0.3)
    stats = wait_for_stats(client, "cancelled_streams", 1)
    assert stats["cancelled_streams"] == 1
    assert stats["hanging"] == 0


def test_client_disconnect_mid_stream_is_counted(client: httpx.Client) -> None:
    body = {"model": "echo+chunk-delay=100+words=50", "messages": MESSAGES, "stream": True}
    with client.stream("POST", "/chat/completions", json=body) as response:
        lines = response.iter_lines()
        next(lines)
        assert client.get("/_fake/stats").json()["active_streams"] == 1
    stats = wait_for_stats(client, "cancelled_streams", 1)
    assert stats["cancelled_streams"] == 1
    assert stats["active_streams"] == 0
    assert stats["completed_streams"] == 0


def test_drop_mid_stream_breaks_the_stream(client: httpx.Client) -> None:
    contents: list[str] = []
    body = {"model": "echo+drop=3", "messages": MESSAGES, "stream": True}
    with (
        pytest.raises(httpx.RemoteProtocolError),
        client.stream("POST", "/chat/completions", json=body) as response,
    ):
        for line in response.iter_lines():  # lazily: the error comes after the 3 chunks
            if not line:
                continue
            assert line != "data: [DONE]"
            delta = json.loads(line.removeprefix("data: "))["choices"][0]["delta"]
            if "role" not in delta:
                contents.append(delta["content"])
    assert contents == ["Echo:", " hello", " there"]
    stats = client.get("/_fake/stats").json()
    assert (stats["dropped_streams"], stats["completed_streams"], stats["active_streams"]) == (1, 0, 0)


def test_drop_mid_stream_with_sdk(sdk: openai.OpenAI) -> None:
    received: list[str] = []
    with pytest.raises((openai.APIError, httpx.RemoteProtocolError)):
        for chunk in sdk.chat.completions.create(model="echo+drop=3", messages=MESSAGES, stream=True):
            if chunk.choices and chunk.choices[0].delta.content:
                received.append(chunk.choices[0].delta.content)
    assert received == ["Echo:", " hello", " there"]


def test_drop_non_stream_closes_without_response(client: httpx.Client) -> None:
    with pytest.raises(httpx.RemoteProtocolError):
        chat(client, "echo+drop=0")


def test_empty_stream(client: httpx.Client) -> None:
    assert stream_events(client, "echo+empty-stream", stream_options={"include_usage": True}) == ["[DONE]"]


def test_nousage(client: httpx.Client) -> None:
    assert "usage" not in chat(client, "echo+nousage").json()
    events = stream_events(client, "echo+nousage", stream_options={"include_usage": True})
    assert events[-1] == "[DONE]"
    assert all("usage" not in json.loads(event) for event in events[:-1])


def test_cached_tokens(client: httpx.Client) -> None:
    usage = chat(client, "echo+cached=5", prompt_cache={"key": "ignored"}).json()["usage"]
    assert usage["prompt_tokens_details"] == {"cached_tokens": 5}
    assert usage["prompt_tokens"] == PROMPT_TOKENS


def test_latency_non_stream(client: httpx.Client) -> None:
    started = time.perf_counter()
    assert chat(client, "echo+latency=100").status_code == 200
    assert time.perf_counter() - started >= 0.095


def test_ttft_stream(client: httpx.Client) -> None:
    body = {"model": "echo+ttft=100", "messages": MESSAGES, "stream": True}
    started = time.perf_counter()
    with client.stream("POST", "/chat/completions", json=body) as response:
        next(response.iter_lines())
        assert time.perf_counter() - started >= 0.095


# --- stats, routing, validation -----------------------------------------------------------------


def test_stats_and_reset(client: httpx.Client) -> None:
    assert client.get("/_fake/stats").json()["requests"] == 0
    request = {"model": "echo+words=2", "messages": MESSAGES, "temperature": 0.5}
    client.post("/chat/completions", json=request, headers={"Authorization": "Bearer sk-upstream"})
    stream_events(client, "echo+words=2")
    stats = client.get("/_fake/stats").json()
    assert stats["requests"] == 2
    assert stats["completed_streams"] == 1
    assert stats["active_streams"] == 0
    assert stats["last_request"]["stream"] is True
    assert client.get("/_fake/stats").json()["last_headers"]["content-type"] == "application/json"

    client.post("/chat/completions", json=request, headers={"Authorization": "Bearer sk-upstream"})
    stats = client.get("/_fake/stats").json()
    assert stats["last_request"] == request
    assert stats["last_headers"]["authorization"] == "Bearer sk-upstream"

    assert client.post("/_fake/reset").status_code == 200
    stats = client.get("/_fake/stats").json()
    assert stats["requests"] == stats["completed_streams"] == stats["cancelled_streams"] == 0
    assert stats["last_request"] is None and stats["last_headers"] is None


def test_unknown_path_is_404(client: httpx.Client) -> None:
    assert_openai_error(client.get("/nope"), 404, "invalid_request_error")
    assert_openai_error(client.post("/completions", json={}), 404, "invalid_request_error")


def test_wrong_method_is_405(client: httpx.Client) -> None:
    assert_openai_error(client.get("/chat/completions"), 405, "invalid_request_error")


def test_bad_json_is_400(client: httpx.Client) -> None:
    response = client.post("/chat/completions", content=b"{not json", headers={"content-type": "application/json"})
    assert_openai_error(response, 400, "invalid_request_error")


def test_missing_messages_is_400(client: httpx.Client) -> None:
    error = assert_openai_error(client.post("/chat/completions", json={"model": "echo"}), 400, "invalid_request_error")
    assert error["param"] == "messages"


def test_unknown_directive_is_400(client: httpx.Client) -> None:
    error = assert_openai_error(chat(client, "echo+explode"), 400, "invalid_request_error")
    assert error["param"] == "model"


def test_connection_refused_on_free_port() -> None:
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{free_port()}/v1/models", timeout=2.0)


def test_lifespan_protocol() -> None:
    async def run() -> list[dict[str, Any]]:
        inbox = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return inbox.pop(0)

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        await asyncio.wait_for(FakeUpstream()({"type": "lifespan"}, receive, send), 1.0)
        return sent

    assert asyncio.run(run()) == [
        {"type": "lifespan.startup.complete"},
        {"type": "lifespan.shutdown.complete"},
    ]


def test_default_prefix_in_process() -> None:
    async def run() -> tuple[int, dict[str, Any]]:
        transport = httpx.ASGITransport(app=FakeUpstream())
        async with httpx.AsyncClient(transport=transport, base_url="http://fake") as http:
            response = await http.post("/chat/completions", json={"model": "echo", "messages": MESSAGES})
            return response.status_code, response.json()

    status, body = asyncio.run(run())
    assert status == 200
    assert body["choices"][0]["message"]["content"] == EXPECTED_TEXT


def test_flaky_fails_that_share_of_requests_in_mixed_ways(client: httpx.Client) -> None:
    outcomes: dict[str, int] = {}
    for _ in range(400):
        try:
            response = chat(client, "echo+flaky=20")
        except httpx.TransportError:
            kind = "closed"
        else:
            if response.status_code != 200:
                kind = str(response.status_code)
            else:
                try:
                    response.json()
                    kind = "ok"
                except ValueError:
                    kind = "malformed"
        outcomes[kind] = outcomes.get(kind, 0) + 1
    failed = 400 - outcomes.get("ok", 0)
    assert 40 <= failed <= 130, outcomes  # 80 expected
    assert client.get("/_fake/stats").json()["flaky_failures"] == failed
    assert {"500", "503", "429", "malformed", "closed"} <= outcomes.keys(), outcomes
    assert chat(client, "echo+flaky=0").status_code == 200
    with pytest.raises(ValueError):
        parse_model("echo+flaky=101")
