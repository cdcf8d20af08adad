"""Property-based fuzzing of what clients control: /v1/chat/completions bodies, the playground's JSON
endpoints, the dashboard's and the admin's query strings. Never a 5xx; and every call still gets its
row, so a good call after the fuzzing is stored with its exact cost.

Run time is bounded (100-150 examples per surface, no example database); the live server and the fake
upstream are shared by a surface's examples, as they would be by real clients.
"""

from decimal import Decimal
from urllib.parse import quote

import httpx
import orjson
import pytest
from django.test import Client
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from billing.models import Call
from billing.pricing import cost_for_usage
from tests.billing_fixtures import budget_for
from tests.factories import route_create, user_create

pytestmark = pytest.mark.filterwarnings("ignore:No directory at:UserWarning")

FUZZ = settings(max_examples=150, deadline=None, database=None, suppress_health_check=list(HealthCheck))
CSRF_TOKEN = "f" * 32  # any well-formed secret, sent as cookie and header alike

# ---------------------------------------------------------------------------- strategies

odd_text = st.text(st.characters(codec="utf-8"), max_size=30)  # NUL, controls, CJK, emoji, RTL marks ...
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | odd_text
)
json_values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(odd_text, inner, max_size=3), max_leaves=8
)
counts = st.integers(min_value=-2, max_value=5) | st.integers(min_value=2**31, max_value=2**64 - 1) | json_values
content_part = st.fixed_dictionaries(
    {"type": st.sampled_from(["text", "image_url", "input_audio", "refusal", "bogus"])},
    optional={"text": odd_text, "image_url": json_values},
)
MODEL_NAMES = ["fuzz-echo", "fuzz-route", "fuzz-unpriced", "fuzz-stream"]
ROLES = ["system", "developer", "user", "assistant", "tool"]
text_parts = st.lists(st.fixed_dictionaries({"type": st.just("text"), "text": odd_text}), max_size=3)
# Bodies routerweb accepts (odd text, every option), so that the fuzzing reaches the upstream and the
# cost rows; and bodies with any JSON in any field, so that it reaches every check.
good_chat_body = st.fixed_dictionaries(
    {
        "model": st.sampled_from(MODEL_NAMES),
        "messages": st.lists(
            st.fixed_dictionaries({"role": st.sampled_from(ROLES), "content": odd_text | text_parts | st.none()}),
            min_size=1,
            max_size=3,
        ),
    },
    optional={
        "max_tokens": st.integers(min_value=1, max_value=5000),
        "max_completion_tokens": st.integers(min_value=1, max_value=5000),
        "n": st.integers(min_value=1, max_value=3),
        "stream": st.booleans(),
        "stream_options": st.fixed_dictionaries({"include_usage": st.booleans()}),
        "fallback_models": st.lists(st.sampled_from(MODEL_NAMES), max_size=3),
        "temperature": st.floats(min_value=0, max_value=2),
        "tools": json_values,
        "user": odd_text,
    },
)
wild_message = st.fixed_dictionaries(
    {
        "role": st.sampled_from([*ROLES, "bogus"]) | json_values,
        "content": odd_text | st.lists(content_part | json_values, max_size=3) | json_values,
    },
    optional={"name": odd_text, "tool_calls": json_values},
)
wild_chat_body = st.fixed_dictionaries(
    {
        "model": st.sampled_from(MODEL_NAMES) | odd_text | json_values,
        "messages": st.lists(wild_message, min_size=1, max_size=3) | json_values,
    },
    optional={
        "max_tokens": counts,
        "max_completion_tokens": counts,
        "n": counts,
        "stream": st.booleans() | json_values,
        "stream_options": st.fixed_dictionaries({"include_usage": json_values}) | json_values,
        "fallback_models": st.lists(st.sampled_from(MODEL_NAMES) | odd_text, max_size=3) | json_values,
        "temperature": json_values,
        "tools": json_values,
        "user": odd_text,
    },
)
raw_chat_body = st.one_of(
    good_chat_body.map(orjson.dumps),
    good_chat_body.map(orjson.dumps),
    wild_chat_body.map(orjson.dumps),
    json_values.map(orjson.dumps),
    st.binary(max_size=40),
)
vote_body = st.fixed_dictionaries(
    {},
    optional={
        "compared": st.lists(st.sampled_from(MODEL_NAMES) | odd_text, max_size=5) | json_values,
        "request_ids": st.lists(st.just("req_0") | odd_text, max_size=5) | json_values,
        "chosen": st.sampled_from(MODEL_NAMES) | odd_text | json_values,
    },
).map(orjson.dumps) | st.binary(max_size=40)
DASHBOARD_FIELDS = ["range", "start", "end", "model", "route", "user", "key", "before"]
dashboard_value = (
    st.sampled_from(
        ["today", "7d", "30d", "month", "custom", "2025-01-31", "0000-01-01", "99999-12-31", "1e999999", "NaN"]
        + ["gpt-4o", "mini", "alice", "ok", "error", "1", "0", "-1"]
    )
    | st.integers(min_value=-(2**70), max_value=2**70).map(str)
    | odd_text
)
dashboard_query = st.dictionaries(st.sampled_from(DASHBOARD_FIELDS) | odd_text, dashboard_value, max_size=5)
ADMIN_LOOKUPS = [
    "created_at__year",
    "created_at__month",
    "created_at__day",
    "created_at__gte",
    "created_at__lt",
    "status__exact",
    "model__id__exact",
    "user__id__exact",
    "unpriced__exact",
    "cost_usd__gte",
    "id",
    "id__in",
    "q",
    "o",
    "p",
]
admin_query = st.dictionaries(st.sampled_from(ADMIN_LOOKUPS) | odd_text, dashboard_value, max_size=4)


# ---------------------------------------------------------------------------- the surfaces


@pytest.fixture
def fuzz_models(fake_model, user):
    """Models a fuzzed body may name: priced, unpriced, a route over both; the user has a budget to reserve on."""
    echo = fake_model("fuzz-echo", "echo+words=3", price=(1, 2))
    fake_model("fuzz-stream", "echo+words=5", price=(3, 4))
    unpriced = fake_model("fuzz-unpriced", "echo")
    route_create("fuzz-route", [unpriced, echo])
    budget_for(limit="1000", user=user)
    return echo


def good_call_is_stored_with_its_cost(post, recorded_calls, sent: int) -> None:
    response = post(b'{"model": "fuzz-echo", "messages": [{"role": "user", "content": "still counting"}]}')
    assert response.status_code == 200
    calls = recorded_calls()
    assert len(calls) == sent + 1  # one row per call, the fuzzed ones included
    (good,) = [c for c in calls if c.request_id == response.headers["X-Request-Id"]]
    price = good.model.prices.get()
    assert good.cost_usd == cost_for_usage(
        price, prompt_tokens=good.prompt_tokens, cached_tokens=0, completion_tokens=good.completion_tokens
    )
    assert good.cost_usd > 0 and not good.usage_estimated


def test_fuzzed_chat_completions_never_answer_5xx(http, fuzz_models, recorded_calls):
    sent = []

    def post(raw: bytes) -> httpx.Response:
        return http.post("/v1/chat/completions", content=raw, headers={"Content-Type": "application/json"})

    @FUZZ
    @given(raw=raw_chat_body)
    def never_5xx(raw):
        sent.append(raw)
        response = post(raw)
        assert response.status_code < 500, (raw, response.text)

    never_5xx()
    good_call_is_stored_with_its_cost(post, recorded_calls, len(sent))


@pytest.fixture
def session(gateway, user) -> httpx.Client:
    """An httpx client on the live server with alice's session and a CSRF token, as the playground page has."""
    client = Client()
    client.force_login(user)
    cookies = {"sessionid": client.cookies["sessionid"].value, "csrftoken": CSRF_TOKEN}
    with httpx.Client(base_url=gateway.url, cookies=cookies, headers={"X-CSRFToken": CSRF_TOKEN}, timeout=20) as http:
        yield http


def test_fuzzed_playground_endpoints_never_answer_5xx(session, fuzz_models, recorded_calls):
    sent = []

    def post(raw: bytes) -> httpx.Response:
        return session.post("/playground/api/chat", content=raw, headers={"Content-Type": "application/json"})

    @settings(FUZZ, max_examples=100)
    @given(chat=raw_chat_body, vote=vote_body, request_id=odd_text.filter(bool))
    def never_5xx(chat, vote, request_id):
        sent.append(chat)
        for response in [
            post(chat),
            session.post("/playground/api/votes", content=vote, headers={"Content-Type": "application/json"}),
            session.get(f"/playground/api/calls/{quote(request_id, safe='')}"),
        ]:
            assert response.status_code < 500, (chat, vote, request_id, response.text)

    never_5xx()
    good_call_is_stored_with_its_cost(post, recorded_calls, len(sent))


# Transactional: a value PostgreSQL refuses (DataError) would abort a test-wide transaction, which
# requests in production (autocommit) never share.
@pytest.mark.django_db(transaction=True)
def test_fuzzed_dashboard_and_admin_query_strings_never_answer_5xx(calls):
    staff, viewer = Client(), Client()
    staff.force_login(user_create("fuzz-staff", is_staff=True, is_superuser=True))
    viewer.force_login(user_create("fuzz-viewer"))

    @FUZZ
    @given(query=dashboard_query, admin_filters=admin_query)
    def never_5xx(query, admin_filters):
        for client in (staff, viewer):
            for page in ["/dashboard/", "/dashboard/data.json", "/dashboard/export.csv"]:
                response = client.get(page, query)
                assert response.status_code < 500, (page, query)
        response = staff.get("/admin/billing/call/", admin_filters)
        assert response.status_code < 500, admin_filters

    never_5xx()
    assert Call.objects.filter(cost_usd__gt=Decimal(0)).exists()
