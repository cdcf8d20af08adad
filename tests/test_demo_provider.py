"""The offline demo provider (routing/demo_provider.py): bounded, no directives, real ids and timestamps,
mounted by routerweb only with ROUTERWEB_DEMO_PROVIDER on."""

from __future__ import annotations

import asyncio
import io
import time
import tracemalloc

import httpx
import orjson
import pytest
from django.core.management import call_command

from routing.demo_provider import MAX_BODY_BYTES, MAX_WORDS, DemoProvider
from routing.upstream import own_origin, serving_address

HELLO = [{"role": "user", "content": "hello demo"}]


def demo(method: str, path: str, **kwargs) -> httpx.Response:
    async def go():
        transport = httpx.ASGITransport(app=DemoProvider())
        async with httpx.AsyncClient(transport=transport, base_url="http://demo.test") as client:
            return await client.request(method, path, **kwargs)

    return asyncio.run(go())


def chat(**body) -> httpx.Response:
    return demo("POST", "/demo/v1/chat/completions", json={"model": "demo-echo", "messages": HELLO, **body})


def sse_events(response: httpx.Response) -> list:
    lines = [line[6:] for line in response.text.split("\n\n") if line.startswith("data: ")]
    assert lines[-1] == "[DONE]"
    return [orjson.loads(line) for line in lines[:-1]]


def test_it_echoes_the_last_user_message_with_usage():
    body = chat().json()
    assert body["choices"][0]["message"]["content"].startswith("Echo: hello demo (This is routerweb's offline demo")
    assert body["model"] == "demo-echo"
    words = len(body["choices"][0]["message"]["content"].split())
    assert body["usage"] == {"prompt_tokens": 5, "completion_tokens": words, "total_tokens": 5 + words}


def test_ids_are_unique_and_timestamps_real():
    first, second = chat().json(), chat().json()
    assert first["id"] != second["id"] and first["id"].startswith("chatcmpl-") and len(first["id"]) == 41
    assert abs(first["created"] - time.time()) < 60


@pytest.mark.parametrize("model", ["echo+words=50000000", "demo-echo+hang", "demo-echo+latency=999999999"])
def test_directives_are_not_interpreted(model):
    started = time.monotonic()
    response = demo("POST", "/demo/v1/chat/completions", json={"model": model, "messages": HELLO})
    assert response.status_code == 200 and time.monotonic() - started < 2
    assert response.json()["model"] == model  # echoed as given, never obeyed
    assert response.json()["usage"]["completion_tokens"] < 30


@pytest.mark.parametrize("stream", [False, True])
def test_fifty_million_words_asked_get_the_cap_in_flat_memory(stream, monkeypatch):
    monkeypatch.setattr("routing.demo_provider.CHUNK_DELAY_S", 0)
    long_prompt = [{"role": "user", "content": "word " * 20_000}]
    tracemalloc.start()
    try:
        response = demo(
            "POST",
            "/demo/v1/chat/completions",
            json={"model": "demo-echo", "messages": long_prompt, "max_tokens": 50_000_000, "stream": stream},
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert response.status_code == 200
    if stream:
        events = sse_events(response)
        words = "".join(e["choices"][0]["delta"].get("content", "") for e in events if e["choices"]).split()
    else:
        words = response.json()["choices"][0]["message"]["content"].split()
    assert len(words) == MAX_WORDS
    assert len(response.content) < 200_000
    assert peak < 5_000_000, peak  # the request and a few hundred words, never the asked-for answer


def test_max_tokens_is_honoured():
    assert chat(max_tokens=3).json()["choices"][0]["message"]["content"] == "Echo: hello demo"
    assert chat(max_completion_tokens=1).json()["usage"]["completion_tokens"] == 1


def test_streams_word_by_word_with_a_usage_chunk_only_when_asked():
    plain = sse_events(chat(stream=True, max_tokens=4))
    assert [e["choices"][0]["delta"].get("content") for e in plain[1:-1]] == ["Echo:", " hello", " demo", " (This"]
    assert plain[-1]["choices"][0]["finish_reason"] == "stop" and "usage" not in plain[-1]
    assert len({e["id"] for e in plain}) == 1
    with_usage = sse_events(chat(stream=True, max_tokens=4, stream_options={"include_usage": True}))
    assert with_usage[-1]["choices"] == [] and with_usage[-1]["usage"]["completion_tokens"] == 4


def test_bad_requests_get_openai_errors():
    assert demo("POST", "/demo/v1/chat/completions", content=b"{nope").status_code == 400
    assert chat(messages=[]).json()["error"]["param"] == "messages"
    too_big = demo("POST", "/demo/v1/chat/completions", content=b"x" * (MAX_BODY_BYTES + 1))
    assert too_big.status_code == 413 and too_big.json()["error"]["type"] == "invalid_request_error"
    assert demo("GET", "/demo/v1/chat/completions").status_code == 405
    assert demo("GET", "/demo/v1/_fake/stats").status_code == 404
    assert demo("GET", "/demo/v1/models").json()["data"][0]["id"] == "demo-echo"


def test_routerweb_serves_it_only_when_the_setting_is_on(gateway, settings):
    url = f"{gateway.url}/demo/v1/chat/completions"
    body = {"model": "demo-echo", "messages": HELLO}
    settings.ROUTERWEB_DEMO_PROVIDER = False
    assert httpx.post(url, json=body).status_code == 404
    settings.ROUTERWEB_DEMO_PROVIDER = True
    assert httpx.post(url, json=body).status_code == 200


def test_the_demo_routes_answer_offline_through_the_gateway(gateway, http, settings, monkeypatch):
    for name in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "DEEPSEEK_API_KEY", "DASHSCOPE_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    settings.ROUTERWEB_DEMO_PROVIDER = True
    # seed_demo run by hand, with no idea of the port the server uses: the demo provider's address is
    # the path /demo/v1, resolved at call time against the address the call came in on.
    settings.ROUTERWEB_PUBLIC_URL = "http://127.0.0.1:1"
    call_command("seed_demo", stdout=io.StringIO())
    response = http.post("/v1/chat/completions", json={"model": "default", "messages": HELLO, "max_tokens": 5})
    assert response.status_code == 200, response.text
    assert response.headers["X-Router-Model"] == "demo-echo"
    assert response.json()["choices"][0]["message"]["content"] == "Echo: hello demo (This is"


@pytest.mark.parametrize(
    ("server", "origin"),
    [
        (("127.0.0.1", 8123), "http://127.0.0.1:8123"),
        (("0.0.0.0", 8000), "http://127.0.0.1:8000"),
        (("::", 8000), "http://[::1]:8000"),
        (("/run/routerweb.sock", None), "http://public.test:9000"),
        (None, "http://public.test:9000"),
    ],
)
def test_a_provider_on_routerweb_itself_is_reached_where_the_call_came_in(server, origin, settings):
    settings.ROUTERWEB_PUBLIC_URL = "http://public.test:9000/"
    token = serving_address.set(server)
    try:
        assert own_origin() == origin
    finally:
        serving_address.reset(token)
