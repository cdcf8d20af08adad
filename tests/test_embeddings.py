"""POST /v1/embeddings through the real parts: the live server, the official openai SDK, the fake upstream
with its faults; the kind of each model (chat or embeddings) in the registry, its file, /v1/models and the
refusals; cost rows, budgets and rate limits."""

import base64
import io
import json
import re
import struct
from datetime import datetime
from decimal import Decimal

import openai
import orjson
import pytest
import yaml
from django.core.management import CommandError, call_command
from django.urls import reverse

from billing.models import Call
from routing.models import ApiKey, ModelEndpoint, Route
from routing.playground import default_choice, playground_choices
from routing.registry import registry_load
from routing.upstream import MAX_ANSWER_BYTES
from testkit.fake_upstream import fake_embedding
from tests.billing_fixtures import budget_for, client_for, cost_of
from tests.factories import model_create, provider_create, route_create

EMBEDDINGS = "embeddings"


@pytest.fixture
def embedder(fake_model):
    """`embedder("name", "echo+status=503", price=(in, out))`: an embeddings model on the fake upstream."""

    def create(name: str, upstream: str = "echo", **fields):
        return fake_model(name, upstream, kind=EMBEDDINGS, **fields)

    return create


def embed(http, model="embed", **body):
    return http.post("/v1/embeddings", json={"model": model, "input": "hello embeddings", **body})


# ---------------------------------------------------------------------------- the SDK, float and base64


def test_sdk_embeddings_float_and_base64_give_the_upstream_vectors(client, embedder, recorded_calls):
    embedder("embed")
    raw = client.embeddings.with_raw_response.create(
        model="embed", input=["one two three", "four"], encoding_format="float"
    )
    answer = raw.parse()
    assert [d.embedding for d in answer.data] == [fake_embedding("one two three", 8), fake_embedding("four", 8)]
    assert (answer.usage.prompt_tokens, answer.usage.total_tokens) == (4, 4)
    assert raw.headers["X-Router-Model"] == "embed"

    # The SDK asks for base64 by default and decodes it (float32: the upstream's floats, rounded to float32).
    decoded = client.embeddings.create(model="embed", input="one two three", dimensions=16)
    expected = struct.unpack("<16f", struct.pack("<16f", *fake_embedding("one two three", 16)))
    assert decoded.data[0].embedding == list(expected)

    calls = recorded_calls()
    assert [(c.kind, c.status, c.prompt_tokens, c.completion_tokens) for c in calls] == [
        (EMBEDDINGS, "ok", 4, 0),
        (EMBEDDINGS, "ok", 3, 0),
    ]


def test_the_body_is_forwarded_with_the_upstream_model_and_without_routerweb_fields(http, embedder, fake_upstream):
    embedder("embed", "echo+latency=1")
    answer = embed(http, input=[[1, 2, 3], [4]], encoding_format="base64", dimensions=4, user="u-1")
    assert answer.status_code == 200, answer.text
    sent = fake_upstream.app.stats()["last_request"]
    assert {k: sent[k] for k in ("model", "input", "encoding_format", "dimensions", "user")} == {
        "model": "echo+latency=1",
        "input": [[1, 2, 3], [4]],
        "encoding_format": "base64",
        "dimensions": 4,
        "user": "u-1",
    }
    vector = base64.b64decode(answer.json()["data"][1]["embedding"])
    assert len(vector) == 4 * 4
    assert answer.json()["usage"] == {"prompt_tokens": 4, "total_tokens": 4}  # unpriced: no cost added


# ---------------------------------------------------------------------------- fallback


@pytest.mark.parametrize("fault", ["status=503", "status=429", "status=500", "malformed", "drop=0", "latency=3000"])
def test_a_failing_candidate_falls_back_to_the_next(http, embedder, fake_provider, recorded_calls, fault):
    fake_provider.read_timeout_s = 1
    fake_provider.save()
    embedder("first", f"echo+{fault}")
    embedder("second")
    route_create("embed-route", ["first", "second"])
    answer = embed(http, "embed-route")
    assert answer.status_code == 200, answer.text
    assert answer.headers["X-Router-Model"] == "second"
    assert answer.headers["X-Router-Attempts"] == "2"
    (call,) = recorded_calls()
    assert (call.kind, call.model.name, [a["outcome"] for a in call.attempts]) == (
        EMBEDDINGS,
        "second",
        ["error", "ok"],
    )


def test_a_400_from_the_upstream_is_the_clients_and_does_not_fall_back(http, embedder, recorded_calls):
    embedder("first", "echo+status=400")
    embedder("second")
    route_create("embed-route", ["first", "second"])
    answer = embed(http, "embed-route")
    assert answer.status_code == 400
    assert answer.json()["error"]["message"] == "Fake upstream: injected HTTP 400 error."
    (call,) = recorded_calls()
    assert [a["model"] for a in call.attempts] == ["first"]


def test_all_candidates_failing_is_a_502_listing_them(http, embedder, recorded_calls):
    embedder("first", "echo+status=503")
    answer = embed(http, "first", fallback_models=["first"])
    assert answer.status_code == 502
    assert answer.json()["error"]["code"] == "all_candidates_failed"
    (call,) = recorded_calls()
    assert (call.status, call.kind, call.cost_usd) == ("error", EMBEDDINGS, 0)


# ---------------------------------------------------------------------------- money


def test_cost_rows_are_input_tokens_only_at_the_input_price_exactly(http, embedder, recorded_calls):
    embedder("embed", "echo", price=("0.02", "7"))  # an output price must never be charged
    words = " ".join(["word"] * 1234)
    answer = embed(http, input=[words, "x"])
    assert answer.status_code == 200, answer.text
    usage = answer.json()["usage"]
    assert usage["prompt_tokens"] == 1235
    (call,) = recorded_calls()
    expected = Decimal(1235) * Decimal("0.02") / Decimal(1_000_000)
    assert (call.prompt_tokens, call.completion_tokens, call.cost_usd, call.usage_estimated) == (
        1235,
        0,
        expected,
        False,
    )
    # the answer's usage.cost says the same, every digit (spliced in without parsing the vectors)
    assert json.loads(answer.content, parse_float=Decimal)["usage"]["cost"] == expected


def test_usage_missing_or_invalid_is_estimated_from_the_input(http, embedder, recorded_calls):
    embedder("embed", "echo+nousage", price=(1, 1))
    text = "a" * 400  # 100 tokens at 4 characters a token
    assert embed(http, input=[text, "bb"]).status_code == 200
    assert embed(http, input=[[1, 2, 3], [4]]).status_code == 200  # a token each
    calls = recorded_calls()
    assert [(c.prompt_tokens, c.completion_tokens, c.usage_estimated, c.estimate_reason) for c in calls] == [
        (101, 0, True, "no_usage"),
        (4, 0, True, "no_usage"),
    ]
    assert calls[0].cost_usd == Decimal(101) / Decimal(1_000_000)


def test_a_budget_reserves_the_input_bound_and_settles_to_the_real_cost(http, user, embedder, recorded_calls):
    from billing.budget_upkeep import budget_upkeep

    embedder("embed", "echo", price=(1000, 1000))
    body = {"model": "embed", "input": "hello embeddings"}
    worst = Decimal(len(orjson.dumps(body))) * 1000 / 1_000_000  # input bound only: no output tokens
    refused_budget = budget_for(limit="1", spent=str(Decimal(1) - worst + Decimal("0.000001")), user=user)
    refused = http.post("/v1/embeddings", json=body)
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "budget_exceeded"
    assert f"could cost up to ${worst:f}" in refused.json()["error"]["message"]
    refused_budget.delete()

    budget = budget_for(limit="1", spent=str(Decimal(1) - worst), user=user)  # exactly the bound is left
    assert http.post("/v1/embeddings", json=body).status_code == 200
    calls = recorded_calls()
    budget_upkeep.return_all()
    budget.refresh_from_db()
    assert budget.spent_usd == Decimal(1) - worst + calls[-1].cost_usd and budget.reserved_usd == 0
    assert calls[-1].cost_usd == Decimal(2) * 1000 / 1_000_000


def test_rate_limits_count_embeddings_requests_and_input_tokens(http, user, embedder):
    embedder("embed")
    ApiKey.objects.filter(user=user).update(rpm_limit=2, tpm_limit=100)
    first = embed(http)
    assert first.status_code == 200
    counted = int(first.headers["x-ratelimit-limit-tokens"]) - int(first.headers["x-ratelimit-remaining-tokens"])
    assert counted == len(orjson.dumps({"model": "embed", "input": "hello embeddings"}))  # the bound, no output cap
    too_big = embed(http, input="x" * 200)
    assert too_big.status_code == 429 and "100 tokens per minute" in too_big.json()["error"]["message"]
    assert embed(http).status_code == 200
    third = embed(http)
    assert third.status_code == 429 and "2 requests per minute" in third.json()["error"]["message"]


# ---------------------------------------------------------------------------- kinds


def test_a_chat_model_is_refused_on_embeddings_and_an_embeddings_model_on_chat(
    http, fake_model, embedder, recorded_calls
):
    fake_model("chatty")
    embedder("embed")
    refused = embed(http, "chatty")
    assert refused.status_code == 400
    assert refused.json()["error"] == {
        "message": "The model 'chatty' is a chat model, not an embeddings model: call it on /v1/chat/completions.",
        "type": "invalid_request_error",
        "param": "model",
        "code": "model_kind_mismatch",
    }
    chat = http.post("/v1/chat/completions", json={"model": "embed", "messages": [{"role": "user", "content": "hi"}]})
    assert chat.status_code == 400
    assert chat.json()["error"]["message"] == (
        "The model 'embed' is an embeddings model, not a chat model: call it on /v1/embeddings."
    )
    fallback = embed(http, "embed", fallback_models=["chatty"])
    assert fallback.status_code == 400 and "'chatty' (through 'embed')" in fallback.json()["error"]["message"]
    calls = recorded_calls()
    assert [(c.kind, c.status, c.error_code, c.model_id) for c in calls] == [
        (EMBEDDINGS, "rejected", "model_kind_mismatch", None),
        ("chat", "rejected", "model_kind_mismatch", None),
        (EMBEDDINGS, "rejected", "model_kind_mismatch", None),
    ]


def test_models_list_shows_each_kind_and_stays_valid_for_the_sdk(client, fake_model, embedder):
    fake_model("chatty")
    embedder("embed")
    route_create("embed-route", ["embed"])
    listed = {m.id: m for m in client.models.list()}
    assert {name: m.kind for name, m in listed.items()} == {
        "chatty": "chat",
        "embed": EMBEDDINGS,
        "embed-route": EMBEDDINGS,
    }
    assert listed["embed"].object == "model" and listed["embed"].owned_by == "fake"
    assert client.models.retrieve("embed-route").kind == EMBEDDINGS


# ---------------------------------------------------------------------------- hostile input


HOSTILE = {
    "no input": ({"model": "embed"}, "input"),
    "NUL in text": ({"model": "embed", "input": "a\x00b"}, "input"),
    "NUL in a list": ({"model": "embed", "input": ["ok", "a\x00"]}, "input[1]"),
    "empty text": ({"model": "embed", "input": ""}, "input"),
    "empty list": ({"model": "embed", "input": []}, "input"),
    "too many": ({"model": "embed", "input": ["x"] * 2049}, "input"),
    "mixed": ({"model": "embed", "input": ["x", 1]}, "input[1]"),
    "token past int4": ({"model": "embed", "input": [1, 2**31]}, "input[1]"),
    "negative token": ({"model": "embed", "input": [[1], [-1]]}, "input[1][0]"),
    "token as float": ({"model": "embed", "input": [1.5]}, "input[0]"),
    "token as bool": ({"model": "embed", "input": [True]}, "input[0]"),
    "huge token list": ({"model": "embed", "input": [0] * 32_769}, "input"),
    "input object": ({"model": "embed", "input": {"text": "x"}}, "input"),
    "bad format": ({"model": "embed", "input": "x", "encoding_format": "int8"}, "encoding_format"),
    "dimensions 0": ({"model": "embed", "input": "x", "dimensions": 0}, "dimensions"),
    "dimensions past int4": ({"model": "embed", "input": "x", "dimensions": 2**31}, "dimensions"),
    "dimensions text": ({"model": "embed", "input": "x", "dimensions": "8"}, "dimensions"),
    "user not text": ({"model": "embed", "input": "x", "user": 5}, "user"),
    "user with NUL": ({"model": "embed", "input": "x", "user": "a\x00"}, "user"),
    "model NUL": ({"model": "em\x00bed", "input": "x"}, "model"),
    "model too long": ({"model": "m" * 101, "input": "x"}, "model"),
    "model missing": ({"input": "x"}, "model"),
    "fallback not names": ({"model": "embed", "input": "x", "fallback_models": [1]}, "fallback_models"),
}


@pytest.mark.parametrize("case", HOSTILE)
def test_hostile_input_gets_a_400_naming_the_field_and_a_storable_row(http, embedder, recorded_calls, case):
    embedder("embed")
    body, param = HOSTILE[case]
    answer = http.post("/v1/embeddings", content=orjson.dumps(body), headers={"Content-Type": "application/json"})
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert (error["type"], error["param"], error["code"]) == ("invalid_request_error", param, "invalid_value")
    assert "\x00" not in error["message"]
    (call,) = recorded_calls()
    assert (call.kind, call.status, call.http_status) == (EMBEDDINGS, "rejected", 400)


def test_not_json_and_wrong_method(http, embedder):
    embedder("embed")
    assert http.post("/v1/embeddings", content=b"{nope").json()["error"]["code"] == "invalid_json"
    assert http.post("/v1/embeddings", content=b"[1]").json()["error"]["code"] == "invalid_json"
    wrong = http.get("/v1/embeddings")
    assert wrong.status_code == 405 and wrong.json()["error"]["code"] == "method_not_allowed"


def test_a_key_is_required(gateway, embedder):
    embedder("embed")
    sdk = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="rw-not-a-real-key-aaaaaaaaaaaaaaaa", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        sdk.embeddings.create(model="embed", input="x")


def test_an_answer_larger_than_a_chat_answer_is_relayed_whole(http, embedder, fake_provider):
    fake_provider.read_timeout_s = 30  # 40 MB through a busy machine
    fake_provider.save()
    embedder("embed")
    inputs = [f"text number {i}" for i in range(2048)]
    answer = embed(http, input=inputs, dimensions=2048, encoding_format="float")
    assert answer.status_code == 200
    data = answer.json()["data"]
    assert len(data) == 2048 and data[2047]["embedding"] == fake_embedding(inputs[2047], 2048)
    assert len(answer.content) > MAX_ANSWER_BYTES  # more than a chat answer may be: the embeddings cap applies


def test_rows_of_embeddings_store_on_the_database_too(http, embedder, recorded_calls):
    """The kind column and the rollups' key (the test run on PostgreSQL covers COPY and the composite key)."""
    from billing.models import CallRollup

    embedder("embed", "echo", price=(1, 0))
    for _ in range(3):
        assert embed(http).status_code == 200
    recorded_calls()
    assert Call.objects.filter(kind=EMBEDDINGS).count() == 3
    (hour,) = CallRollup.objects.filter(period="hour", kind=EMBEDDINGS)
    assert (hour.calls, hour.prompt_tokens, hour.completion_tokens) == (3, 6, 0)


# ---------------------------------------------------------------------------- the registry: file, admin, rules

REGISTRY_WITH_KINDS = """\
providers:
- name: openai
  base_url: https://api.openai.com/v1
  api_key_env: OPENAI_API_KEY
  timeout_s: 30.0
  connect_timeout_s: 5.0
models:
- name: gpt-4o
  provider: openai
- name: text-embedding-3-small
  provider: openai
  kind: embeddings
  price:
    input_per_mtok: 0.02
    output_per_mtok: 0
routes:
- name: embed
  strategy: ordered
  targets:
  - model: text-embedding-3-small
"""


def _import(tmp_path, text: str) -> None:
    path = tmp_path / "registry.yaml"
    path.write_text(text, encoding="utf-8")
    call_command("import_registry", str(path), stdout=io.StringIO())


def _export() -> str:
    out = io.StringIO()
    call_command("export_registry", stdout=out)
    return out.getvalue()


@pytest.mark.django_db(transaction=True)
def test_the_registry_file_round_trips_the_kind(tmp_path):
    _import(tmp_path, REGISTRY_WITH_KINDS)
    assert dict(ModelEndpoint.objects.values_list("name", "kind")) == {
        "gpt-4o": "chat",
        "text-embedding-3-small": EMBEDDINGS,
    }
    exported = _export()
    assert exported == REGISTRY_WITH_KINDS  # chat is the default and left out
    call_command("flush", interactive=False, verbosity=0)
    _import(tmp_path, exported)
    assert _export() == exported


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda data: data["models"][1].update(kind="vision"),
            "models[1] (text-embedding-3-small): kind must be one of chat, embeddings, got 'vision'",
        ),
        (
            lambda data: data["routes"][0]["targets"].append({"model": "gpt-4o"}),
            "routes[0] (embed): targets: A route's targets must all be of one kind: 'text-embedding-3-small' is an "
            "embeddings model and 'gpt-4o' is a chat model.",
        ),
    ],
)
def test_the_registry_file_refuses_a_bad_kind_and_a_route_of_two_kinds(tmp_path, change, message):
    data = yaml.safe_load(REGISTRY_WITH_KINDS)
    change(data)
    with pytest.raises(CommandError) as refused:
        _import(tmp_path, yaml.safe_dump(data, sort_keys=False))
    assert message in str(refused.value)
    assert not ModelEndpoint.objects.exists()  # nothing applied


def _route_form(route_name: str, models, *, route=None) -> dict[str, str]:
    form = {
        "name": route_name,
        "strategy": "ordered",
        "targets-TOTAL_FORMS": str(len(models)),
        "targets-INITIAL_FORMS": "0",
        "targets-MIN_NUM_FORMS": "0",
        "targets-MAX_NUM_FORMS": "1000",
    }
    for index, model in enumerate(models):
        form |= {f"targets-{index}-position": str(index), f"targets-{index}-model": str(model.pk)}
    return form


@pytest.mark.django_db
def test_the_admin_refuses_a_route_of_two_kinds_and_a_kind_change_that_would_make_one(admin_client):
    chat = model_create(name="chatty")
    embed_model = model_create(name="embed", kind=EMBEDDINGS)
    response = admin_client.post(reverse("admin:routing_route_add"), _route_form("mixed", [embed_model, chat]))
    assert response.status_code == 200
    assert "A route&#x27;s targets must all be of one kind" in response.content.decode()
    assert not Route.objects.filter(name="mixed").exists()

    route_create("chats", [chat, model_create(name="chatty-2")])
    change = admin_client.post(
        reverse("admin:routing_modelendpoint_change", args=[chat.pk]),
        {
            "name": "chatty",
            "provider": chat.provider_id,
            "kind": EMBEDDINGS,
            "upstream_model": "chatty",
            "enabled": "on",
        },
    )
    assert change.status_code == 200
    errors = change.context["adminform"].form.errors
    assert errors["kind"] == [
        "In route 'chats': A route's targets must all be of one kind: 'chatty' is an embeddings model and "
        "'chatty-2' is a chat model."
    ]
    assert ModelEndpoint.objects.get(pk=chat.pk).kind == "chat"


# ---------------------------------------------------------------------------- the playground's picker


@pytest.mark.django_db
def test_the_playground_lists_embeddings_models_apart_and_never_as_a_chat_target(settings):
    provider = provider_create(name="p")
    model_create(name="chatty", provider=provider)
    embed_model = model_create(name="embed", provider=provider, kind=EMBEDDINGS)
    route_create("embed-route", [embed_model])
    route_create("chat-route", ["chatty"])
    groups = playground_choices(registry=registry_load())
    assert [(g.label, [c.name for c in g.choices], g.for_chat) for g in groups] == [
        ("Routes", ["chat-route"], True),
        ("Models · p", ["chatty"], True),
        ("Embeddings · not for chat", ["embed", "embed-route"], False),
    ]
    assert {c.usable for c in groups[-1].choices} == {False}
    assert default_choice(groups) in ("chat-route", "chatty")


def test_the_playground_page_disables_embeddings_models_and_its_chat_refuses_them(user, fake_model, login):
    fake_model("chatty")
    fake_model("embed", kind=EMBEDDINGS)
    http = login("alice", "pw-alice-123")
    page = http.get("/playground/").text
    option = re.search(r'<option value="embed"[^>]*>[^<]*</option>', page).group(0)
    assert " disabled" in option and "an embeddings model: call it on /v1/embeddings" in option
    fallback_options = page.split('id="fallback-add"')[1].split("</select>")[0]
    assert 'value="embed"' not in fallback_options
    # A hand-made request (the option is disabled) gets the API's refusal.
    refused = http.post(
        "/playground/api/chat",
        json={"model": "embed", "messages": [{"role": "user", "content": "hi"}]},
    )
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "model_kind_mismatch"
    http.close()


# ---------------------------------------------------------------------------- the dashboard's split


def test_the_dashboard_document_splits_chat_and_embeddings_spend_and_filters_by_kind(world, calls):
    root = client_for(world["root"])
    document = root.get("/dashboard/data.json", {"range": "30d"}).json()
    start = datetime.fromisoformat(document["range"]["start"])
    in_range = [c for c in calls if c.created_at >= start]
    split = document["totals"]["by_kind"]
    for kind in ("chat", EMBEDDINGS):
        of_kind = [c for c in in_range if c.kind == kind]
        assert split[kind]["calls"] == len(of_kind) > 0
        assert Decimal(split[kind]["spend_usd"]) == cost_of(of_kind)
    assert Decimal(split["chat"]["spend_usd"]) + Decimal(split[EMBEDDINGS]["spend_usd"]) == Decimal(
        document["totals"]["spend_usd"]
    )
    assert split[EMBEDDINGS]["completion_tokens"] == 0

    embeddings_only = root.get("/dashboard/data.json", {"range": "30d", "kind": EMBEDDINGS}).json()
    assert embeddings_only["range"]["kind"] == EMBEDDINGS
    assert embeddings_only["totals"]["spend_usd"] == split[EMBEDDINGS]["spend_usd"]
    assert [m["model"] for m in embeddings_only["models"]] == ["embed"]
    assert embeddings_only["totals"]["by_kind"]["chat"]["calls"] == 0

    refused = root.get("/dashboard/data.json", {"kind": "images"})
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "kind"


def test_the_dashboard_page_shows_the_split_and_the_kind_filter(world, calls):
    page = client_for(world["root"]).get("/dashboard/", {"range": "30d"}).content.decode()
    note = re.search(r'<span class="kpi-note" id="kpi-spend-kinds">([^<]*)</span>', page).group(1)
    assert note.startswith("chat $") and " · embeddings $" in note
    assert '<select name="kind" id="id_kind">' in page
    filtered = client_for(world["root"]).get("/dashboard/", {"range": "30d", "kind": EMBEDDINGS}).content.decode()
    assert '<option value="embeddings" selected>' in filtered
