"""Call bodies through the live gateway and the official SDK: off by default, each opt-in scope, the
failed-only mode, the size cap with its marker, redaction (built-in and configured), NUL bytes,
streamed answers stored whole, retention by the recorder's upkeep and by the management command."""

import json
from datetime import timedelta
from io import StringIO

import httpx
import openai
import pytest
from django.core.management import call_command
from django.utils import timezone

from billing.body_models import BodyStorage, BodyStorageRule, CallBody
from billing.body_policy import BodyPolicy
from billing.body_retention import BodyRetention, call_bodies_purge
from billing.call_bodies import call_body_for
from billing.call_body_build import TRUNCATED, redaction
from billing.models import Call
from routing.services import api_key_create
from tests.conftest import calls_settle
from tests.factories import route_create

HELLO = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello bodies"}]


def ask(client: openai.OpenAI, model: str = "echo-model", **extra):
    return client.chat.completions.create(model=model, messages=extra.pop("messages", HELLO), **extra)


def bodies() -> dict[str, CallBody]:
    calls_settle()
    return {body.request_id: body for body in CallBody.objects.all()}


def only_call() -> Call:
    calls_settle()
    (call,) = Call.objects.all()
    return call


def test_off_by_default_no_body_rows(client, fake_model):
    fake_model("echo-model")
    fake_model("broken", "echo+status=503")
    ask(client)
    with pytest.raises(openai.APIStatusError):
        ask(client, "broken")
    calls_settle()
    assert Call.objects.count() == 2
    assert CallBody.objects.count() == 0


def test_global_rule_stores_request_parameters_and_answer(client, fake_model):
    fake_model("echo-model", "echo+words=6")
    BodyStorageRule.objects.create(storage=BodyStorage.ALL)
    answer = ask(client, temperature=0.25, max_tokens=50)
    call = only_call()
    body = call_body_for(call.request_id)
    assert body is not None and body.created_at == call.created_at
    assert body.messages == HELLO
    assert body.parameters["temperature"] == 0.25 and body.parameters["max_tokens"] == 50
    assert "messages" not in body.parameters
    assert body.answer == answer.choices[0].message.content
    assert (body.request_truncated, body.answer_truncated, body.tool_calls) == (False, False, [])


@pytest.mark.parametrize(
    "rules, stored",
    [
        ({"user": BodyStorage.ALL}, {"alice-key": True, "alice-other": True, "bob-key": False}),
        ({"key": BodyStorage.ALL}, {"alice-key": True, "alice-other": False, "bob-key": False}),
        ({"user": BodyStorage.OFF, "global": BodyStorage.ALL}, {"alice-key": False, "bob-key": True}),
        ({"key": BodyStorage.OFF, "user": BodyStorage.ALL}, {"alice-key": False, "alice-other": True}),
        ({"user": BodyStorage.OFF, "key": BodyStorage.ALL}, {"alice-key": False}),  # user off: never
        ({"key": BodyStorage.OFF, "route": BodyStorage.ALL}, {"alice-key": False, "alice-other": True}),
    ],
)
def test_scopes(gateway, fake_model, user, api_key, rules, stored):
    fake_model("echo-model")
    route = route_create("smart", ["echo-model"])
    bob = user.__class__.objects.create_user("bob", password="pw-bob-12345")
    keys = {
        "alice-key": api_key,
        "alice-other": api_key_create(user=user, name="other")[1],
        "bob-key": api_key_create(user=bob, name="bob")[1],
    }
    alice_key = user.api_keys.get(name="tests")
    scopes = {"user": {"user": user}, "key": {"api_key": alice_key}, "route": {"route": route}, "global": {}}
    for scope, storage in rules.items():
        BodyStorageRule.objects.create(storage=storage, **scopes[scope])
    requests = {}
    for name in stored:
        response = httpx.post(
            f"{gateway.url}/v1/chat/completions",
            json={"model": "smart" if "route" in rules else "echo-model", "messages": HELLO},
            headers={"Authorization": f"Bearer {keys[name]}"},
        )
        assert response.status_code == 200
        requests[name] = response.headers["X-Request-Id"]
    kept = bodies()
    assert {name: request_id in kept for name, request_id in requests.items()} == stored


def test_route_rule_applies_to_the_route_name_only(client, fake_model):
    fake_model("echo-model")
    route = route_create("smart", ["echo-model"])
    BodyStorageRule.objects.create(route=route, storage=BodyStorage.ALL)
    ask(client, "smart")
    ask(client, "echo-model")
    calls_settle()
    stored = {Call.objects.get(request_id=request_id).requested for request_id in bodies()}
    assert stored == {"smart"}


def test_failed_only_mode(client, fake_model):
    fake_model("echo-model")
    fake_model("broken", "echo+status=503")
    BodyStorageRule.objects.create(storage=BodyStorage.FAILED)
    ask(client)
    with pytest.raises(openai.APIStatusError):
        ask(client, "broken")
    with pytest.raises(openai.NotFoundError):
        ask(client, "no-such-model")  # refused before any upstream: rejected, and stored too
    calls_settle()
    statuses = {Call.objects.get(request_id=request_id).status for request_id in bodies()}
    assert statuses == {"error", "rejected"}
    assert Call.objects.filter(status="ok").count() == 1


def test_size_cap_with_visible_marker(client, fake_model, settings):
    settings.ROUTERWEB_BODY_MAX_BYTES = 2048
    fake_model("echo-model", "echo+words=1500")
    BodyStorageRule.objects.create(storage=BodyStorage.ALL)
    long_text = "word " * 2000
    answer = ask(client, messages=[{"role": "user", "content": long_text}])
    (body,) = bodies().values()
    marker = TRUNCATED.format(limit=2048)
    assert body.request_truncated and body.answer_truncated
    assert body.messages[0]["content"].endswith(marker)
    assert long_text.startswith(body.messages[0]["content"].removesuffix(marker))
    assert body.answer.endswith(marker) and len(body.answer.encode()) <= 2048 + len(marker.encode())
    assert answer.choices[0].message.content.startswith(body.answer.removesuffix(marker))


def test_many_messages_are_cut_with_a_marker(client, fake_model, settings):
    settings.ROUTERWEB_BODY_MAX_BYTES = 1024
    fake_model("echo-model")
    BodyStorageRule.objects.create(storage=BodyStorage.ALL)
    messages = [{"role": "user", "content": f"message number {n}"} for n in range(300)]
    ask(client, messages=messages)
    (body,) = bodies().values()
    assert body.request_truncated
    assert 0 < len(body.messages) < 300
    assert TRUNCATED.format(limit=1024) in str(body.messages[-1])


def test_redaction_built_in_and_configured(client, fake_model, settings):
    fake_model("echo-model")
    BodyStorageRule.objects.create(storage=BodyStorage.ALL)
    settings.ROUTERWEB_BODY_REDACT = [r"\b\d{3}-\d{2}-\d{4}\b"]
    redaction.cache_clear()
    try:
        secret = (
            "my keys: sk-proj-abcdefgh12345678 and Bearer abc.def-ghi_123456 and rw-AbCdEf1234567890, ssn 123-45-6789"
        )
        ask(client, messages=[{"role": "user", "content": secret}], user="sk-ant-0123456789abcdef")
        (body,) = bodies().values()  # recorded after the answer: the setting stays until then
    finally:
        settings.ROUTERWEB_BODY_REDACT = []
        redaction.cache_clear()
    stored = body.messages[0]["content"]
    for leaked in ("sk-proj-abcdefgh12345678", "abc.def-ghi_123456", "rw-AbCdEf1234567890", "123-45-6789"):
        assert leaked not in stored
    assert stored == "my keys: [redacted] and [redacted] and [redacted], ssn [redacted]"
    assert body.parameters["user"] == "[redacted]"
    assert "sk-" not in body.answer  # the echo answer repeats the words: redacted there too


def test_nul_characters_are_dropped(client, fake_model):
    fake_model("echo-model")
    BodyStorageRule.objects.create(storage=BodyStorage.ALL)
    ask(client, messages=[{"role": "user", "content": "a\x00b", "name": "x\x00y"}])
    (body,) = bodies().values()
    assert body.messages[0] == {"role": "user", "content": "ab", "name": "xy"}


def test_streamed_answer_stored_whole(client, fake_model):
    fake_model("echo-model", "echo+words=300+chunk-delay=0")
    BodyStorageRule.objects.create(storage=BodyStorage.ALL)
    stream = ask(client, stream=True, stream_options={"include_usage": True})
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert len(text.split()) == 300
    (body,) = bodies().values()
    assert body.answer == text
    assert body.parameters["stream"] is True
    assert Call.objects.get(request_id=body.request_id).stream


def test_streamed_tool_call_stored_whole(client, fake_model):
    """The fake upstream streams the call's arguments in two parts; the stored body has them joined."""
    fake_model("echo-model", "echo+words=2+tool-use")
    BodyStorageRule.objects.create(storage=BodyStorage.ALL)
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    chunks = [chunk for chunk in ask(client, stream=True, tools=tools) if chunk.choices]
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks)
    deltas = [call for chunk in chunks for call in chunk.choices[0].delta.tool_calls or []]
    arguments = "".join(delta.function.arguments or "" for delta in deltas)
    assert len(deltas) == 2 and json.loads(arguments)  # sent in parts, whole once joined
    (body,) = bodies().values()
    (stored,) = body.tool_calls
    assert stored["function"] == {"name": "get_weather", "arguments": arguments}
    assert stored["id"] == deltas[0].id and body.answer == text


def test_stream_relay_assembles_tool_calls():
    from routing.providers.openai_compat import OpenAIStreamRelay

    relay = OpenAIStreamRelay(httpx.Response(200, content=b""), provider=None, client_wants_usage=False)
    deltas = [
        [{"index": 0, "id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": ""}}],
        [{"index": 0, "function": {"arguments": '{"city": '}}],
        [{"index": 1, "id": "call_2", "type": "function", "function": {"name": "now", "arguments": "{}"}}],
        [{"index": 0, "function": {"arguments": '"Paris"}'}}],
        ["not a delta", {"index": "x"}],
    ]
    for part in deltas:
        relay._note_choice({"delta": {"tool_calls": part}})
    assert relay.tool_calls() == [
        {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
        {"id": "call_2", "type": "function", "function": {"name": "now", "arguments": "{}"}},
    ]
    assert relay.text_chars == 0  # tool call arguments are not content


def test_policy_precedence_without_database():
    policy = BodyPolicy(everyone="all", by_user={1: "off", 2: "failed"}, by_route={"r": "all"}, by_key={10: "all"})
    assert policy.storage_for(user_id=1, key_id=10, requested="r") == "off"  # the user's off wins
    assert policy.storage_for(user_id=2, key_id=10, requested="r") == "all"  # the key is more specific
    assert policy.storage_for(user_id=2, key_id=None, requested="r") == "failed"
    assert policy.storage_for(user_id=3, key_id=None, requested="r") == "all"
    assert not policy.stores(user_id=2, key_id=None, requested="m", status="ok")
    assert policy.stores(user_id=2, key_id=None, requested="m", status="error")
    assert not BodyPolicy().stores(user_id=1, key_id=1, requested="m", status="error")


def _body_at(request_id: str, days_ago: float) -> CallBody:
    return CallBody.objects.create(
        request_id=request_id, created_at=timezone.now() - timedelta(days=days_ago), request={"messages": []}
    )


def test_retention_by_the_recorders_upkeep(db, settings):
    settings.ROUTERWEB_BODY_RETENTION_DAYS = 7
    _body_at("old", 8)
    _body_at("new", 6)
    now = [0.0]
    retention = BodyRetention(every_s=600, clock=lambda: now[0])
    retention()  # not at start-up
    assert CallBody.objects.count() == 2
    now[0] = 600
    retention()
    assert set(CallBody.objects.values_list("request_id", flat=True)) == {"new"}
    _body_at("old-again", 9)
    now[0] = 1199
    retention()  # not due yet
    assert CallBody.objects.filter(request_id="old-again").exists()
    now[0] = 1200
    retention()
    assert set(CallBody.objects.values_list("request_id", flat=True)) == {"new"}


def test_retention_zero_keeps_everything(db, settings):
    settings.ROUTERWEB_BODY_RETENTION_DAYS = 0
    _body_at("ancient", 3650)
    assert call_bodies_purge() == 0
    assert CallBody.objects.count() == 1


def test_purge_command(db, settings):
    settings.ROUTERWEB_BODY_RETENTION_DAYS = 30
    _body_at("a", 40)
    _body_at("b", 20)
    _body_at("c", 1)
    out = StringIO()
    call_command("purge_call_bodies", stdout=out)
    assert "deleted 1 call bodies" in out.getvalue()
    call_command("purge_call_bodies", "--days", "10", stdout=out)
    assert set(CallBody.objects.values_list("request_id", flat=True)) == {"c"}


def test_body_rules_are_validated(db):
    from django.core.exceptions import ValidationError

    from tests.factories import user_create

    BodyStorageRule.objects.create(storage=BodyStorage.ALL)
    with pytest.raises(ValidationError):
        BodyStorageRule(storage=BodyStorage.FAILED).full_clean()  # a second global rule
    alice = user_create("alice")
    route = route_create("r", [])
    with pytest.raises(ValidationError):
        BodyStorageRule(storage=BodyStorage.ALL, user=alice, route=route).full_clean()
