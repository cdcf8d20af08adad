"""The provider adapter seam: a new API format is one small module, and the router needs no change.

`ToyAdapter` speaks a made-up protocol (POST /generate, {"text", "in", "out"}); routed through the
live gateway with the official SDK, its answers come back as OpenAI chat completions, priced.
"""

from decimal import Decimal

import httpx
import orjson
import pytest

from routing.providers import registry as adapter_registry
from routing.providers.base import JSON_HEADERS, Answer, ProviderAdapter
from routing.streaming import DONE_EVENT, StreamRelay
from routing.upstream import UpstreamFailure
from routing.usage import Usage
from testkit.live import serve_asgi
from tests.factories import model_create, provider_create


class ToyAdapter(ProviderAdapter):
    api_format = "toy"
    label = "Toy protocol"

    def url(self, base_url: str) -> str:
        return base_url + "/generate"

    def headers(self, api_key, *, stream):
        return [*JSON_HEADERS, (b"x-toy-key", (api_key or "").encode())]

    def request_body(self, request, model):
        prompt = "\n".join(str(m.get("content")) for m in request["messages"])
        return orjson.dumps({"model": model.upstream_model, "prompt": prompt, "stream": bool(request.get("stream"))})

    def answer(self, raw):
        toy = orjson.loads(raw)
        message = {"role": "assistant", "content": toy["text"]}
        body = {"object": "chat.completion", "choices": [{"index": 0, "message": message, "finish_reason": "stop"}]}
        return Answer(orjson.dumps(body), Usage(prompt=toy["in"], cached=0, completion=toy["out"]))

    def stream_relay(self, response, provider, *, client_wants_usage):
        return ToyStreamRelay(response, provider, client_wants_usage=client_wants_usage)

    def error_fields(self, raw, status):
        return {"message": raw.decode(errors="replace")[:200], "type": None, "param": None, "code": None}


class ToyStreamRelay(StreamRelay):
    def relay_event(self, payload):
        event = orjson.loads(payload)
        if "in" in event:
            self.usage, self.finished = Usage(prompt=event["in"], cached=0, completion=event["out"]), True
            return DONE_EVENT
        self.note_text(event["t"])
        self.note_started()
        return b"data: " + orjson.dumps({"choices": [{"index": 0, "delta": {"content": event["t"]}}]}) + b"\n\n"


async def toy_upstream(scope, receive, send):
    """The made-up protocol's server: echoes the prompt in capitals."""
    if scope["type"] != "http":
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    request = orjson.loads(body)
    if scope["path"] != "/toy/generate" or dict(scope["headers"]).get(b"x-toy-key") != b"toy-secret":
        await send({"type": "http.response.start", "status": 404, "headers": []})
        await send({"type": "http.response.body", "body": b"no such toy"})
        return
    text, sse = request["prompt"].upper(), request["stream"]
    content_type = b"text/event-stream" if sse else b"application/json"
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", content_type)]})
    if not sse:
        await send({"type": "http.response.body", "body": orjson.dumps({"text": text, "in": 11, "out": 7})})
        return
    for word in text.split():
        await send(
            {"type": "http.response.body", "body": b"data: " + orjson.dumps({"t": word}) + b"\n\n", "more_body": True}
        )
    await send({"type": "http.response.body", "body": b'data: {"in": 11, "out": 7}\n\n'})


@pytest.fixture
def toy_model(transactional_db, settings, monkeypatch):
    server = serve_asgi(toy_upstream)
    settings.ROUTERWEB_PROVIDER_ADAPTERS = ["tests.test_provider_adapters.ToyAdapter"]
    adapter_registry.adapters.cache_clear()
    monkeypatch.setenv("TOY_API_KEY", "toy-secret")
    provider = provider_create(name="toy", base_url=f"{server.url}/toy", api_key_env="TOY_API_KEY", api_format="toy")
    model_create(name="toy-1", provider=provider, price=(1, 2))
    yield
    adapter_registry.adapters.cache_clear()
    server.stop()


def test_a_toy_adapter_answers_through_the_gateway_priced(toy_model, client, recorded_calls):
    answer = client.chat.completions.create(model="toy-1", messages=[{"role": "user", "content": "hello toy"}])
    assert answer.choices[0].message.content == "HELLO TOY"
    stream = client.chat.completions.create(model="toy-1", messages=[{"role": "user", "content": "a b"}], stream=True)
    assert [c.choices[0].delta.content for c in stream if c.choices] == ["A", "B"]
    calls = recorded_calls()
    assert [(c.status, c.prompt_tokens, c.completion_tokens, c.usage_estimated) for c in calls] == [
        ("ok", 11, 7, False),
        ("ok", 11, 7, False),
    ]
    assert calls[0].cost_usd == Decimal(11 * 1 + 7 * 2) / 1_000_000


def test_an_adapter_that_refuses_an_answer_falls_back(toy_model, fake_model, client, recorded_calls):
    class Refusing(ToyAdapter):
        def answer(self, raw):
            raise UpstreamFailure("not a toy answer", retryable=True)

    adapter_registry.adapters()["toy"] = Refusing()
    fake_model("echo-1", "echo+words=2")
    from routing.models import Route, RouteTarget

    route = Route.objects.create(name="toys")
    RouteTarget.objects.create(route=route, model_id=model_id("toy-1"), position=0)
    RouteTarget.objects.create(route=route, model_id=model_id("echo-1"), position=1)
    answer = client.chat.completions.create(model="toys", messages=[{"role": "user", "content": "hi"}])
    assert answer.choices[0].message.content.startswith("Echo:")
    (call,) = recorded_calls()
    assert [(a["model"], a["outcome"], a["reason"]) for a in call.attempts] == [
        ("toy-1", "error", "not a toy answer"),
        ("echo-1", "ok", "ok"),
    ]


def model_id(name: str) -> int:
    from routing.models import ModelEndpoint

    return ModelEndpoint.objects.get(name=name).pk


def test_the_built_in_adapter_is_the_default_api_format(transactional_db):
    assert adapter_registry.DEFAULT_API_FORMAT == "openai"
    assert httpx.URL(adapter_registry.adapter_for("openai").url("https://api.example.com/v1")).path == (
        "/v1/chat/completions"
    )


def test_an_adapter_that_cannot_embed_says_so_in_the_admin_rules_and_is_skipped(toy_model, fake_model, http):
    from django.core.exceptions import ValidationError

    from routing.models import ModelEndpoint
    from tests.factories import route_create

    toy = ModelEndpoint(name="toy-embed", provider=ModelEndpoint.objects.get(name="toy-1").provider, kind="embeddings")
    with pytest.raises(ValidationError) as refused:
        toy.full_clean()
    assert refused.value.message_dict == {"kind": ["The provider's API format (toy) has no embeddings endpoint."]}
    toy.save()  # as a row saved before the rule, or by a script: skipped at call time, with the reason
    fake_model("embed-1", kind="embeddings")
    route_create("embeds", ["toy-embed", "embed-1"])
    answer = http.post("/v1/embeddings", json={"model": "embeds", "input": "hi"})
    assert answer.status_code == 200 and answer.headers["X-Router-Model"] == "embed-1"
    only_toy = http.post("/v1/embeddings", json={"model": "toy-embed", "input": "hi"})
    assert only_toy.status_code == 502
    assert "toy-embed: skipped, its provider's API format (toy) cannot embed" in only_toy.json()["error"]["message"]
