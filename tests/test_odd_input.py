"""Odd URLs, query strings and ids answer 400 or 404 with a clear message, never 500 (on SQLite and PostgreSQL).

A NUL byte anywhere in a URL or form is refused site-wide; request ids are checked where they enter;
every admin change list answers 400 for filters it cannot take, whether Django's admin or the
database finds them wrong.
"""

import orjson
import pytest
from django.contrib import admin
from django.test import Client
from django.urls import reverse

from tests.factories import user_create

pytestmark = [pytest.mark.django_db, pytest.mark.filterwarnings("ignore:No directory at:UserWarning")]

CHANGELISTS = sorted(
    reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist") for model in admin.site._registry
)
# Refused by every change list: a value Python or the database cannot take, or an unknown filter.
REFUSED_FILTERS = [
    "created_at__year=0",
    "created_at__year=99999",
    "date_joined__year=99999",
    "effective_from__year=0",
    "created_at__gte=0000-01-01",
    "id__exact=abc",
    "id__in=1,a",
    "limit_usd__gte=NaN",
]
# Values at a column's edge: an empty list or a 400, whichever the database makes of them, never a 500.
EDGE_FILTERS = [
    "id=99999999999999999999",
    "model__id__exact=99999999999999999999999",
    "created_at__day=40",
    "created_at__month=13",
    "limit_usd=1e999999",
    "p=99999",
]
NUL_QUERIES = ["status__exact=%00", "q=%00", "o=%00", "p=%00", "e=%00", "%00=1", "created_at__gte=2025%00"]


def assert_nul_refused(response, param: str):
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["code"], error["param"], error["type"]) == ("nul_byte", param, "invalid_request_error")
    assert "NUL byte (%00)" in error["message"]


@pytest.mark.parametrize("query", REFUSED_FILTERS)
@pytest.mark.parametrize("changelist", CHANGELISTS)
def test_admin_lists_answer_400_to_filters_they_cannot_take(admin_client, changelist, query):
    response = admin_client.get(f"{changelist}?{query}")
    assert response.status_code == 400
    page = response.content.decode()
    assert "This list cannot be filtered by" in page and f'<a href="{changelist}">Show the whole list</a>' in page


@pytest.mark.parametrize("query", EDGE_FILTERS)
@pytest.mark.parametrize("changelist", CHANGELISTS)
def test_admin_lists_never_fail_on_values_at_a_columns_edge(admin_client, changelist, query):
    assert admin_client.get(f"{changelist}?{query}").status_code in (200, 400)


@pytest.mark.parametrize("query", NUL_QUERIES)
def test_a_nul_byte_in_any_query_string_is_refused(admin_client, query):
    name = query.split("=")[0]
    for page in ["/admin/billing/call/", "/dashboard/", "/dashboard/data.json", "/playground/", "/accounts/login/"]:
        assert_nul_refused(admin_client.get(f"{page}?{query}"), name)


def test_a_nul_byte_in_a_path_or_a_form_field_is_refused(admin_client):
    assert_nul_refused(admin_client.get("/playground/api/calls/req_%00"), "path")
    assert_nul_refused(admin_client.get("/admin/billing/call/1%00/change/"), "path")
    assert_nul_refused(Client().post("/accounts/login/", {"username": "a\x00", "password": "x"}), "username")


def test_the_dashboard_form_still_reports_its_own_field_errors(admin_client):
    response = admin_client.get("/dashboard/data.json", {"key": "99999999999999999999999"})
    assert response.status_code == 400 and response.json()["error"]["param"] == "key"


# ---------------------------------------------------------------------------- the playground's ids


@pytest.fixture
def player():
    client = Client()
    client.force_login(user_create("player"))
    return client


@pytest.mark.parametrize("request_id", ["a b", "ü", "x" * 41, "req_1;drop", "%25", "req_%0A"])
def test_a_call_id_that_cannot_exist_is_404(player, request_id):
    response = player.get(f"/playground/api/calls/{request_id}")
    assert response.status_code == 404 and response.json()["error"]["code"] == "call_not_found"


@pytest.mark.parametrize(
    "vote, param",
    [
        ({"compared": ["a", "b"], "request_ids": ["req_1", "req_\x00"], "chosen": "a"}, "request_ids"),
        ({"compared": ["a", "b"], "request_ids": ["req_1", "x" * 41], "chosen": "a"}, "request_ids"),
        ({"compared": ["a", "b"], "request_ids": ["req_1", 2], "chosen": "a"}, "request_ids"),
        ({"compared": ["a", "b\x00"], "request_ids": ["req_1", "req_2"], "chosen": "a"}, "compared"),
    ],
)
def test_votes_with_ids_or_names_that_cannot_exist_are_400(player, vote, param):
    response = player.post("/playground/api/votes", orjson.dumps(vote), content_type="application/json")
    assert response.status_code == 400 and response.json()["error"]["param"] == param


@pytest.mark.parametrize(
    "fields, param",
    [
        ({"model": "gpt\x00"}, "model"),
        ({"model": "a\nb"}, "model"),
        ({"fallback_models": ["m", "x\x00"]}, "fallback_models"),
        ({"messages": [{"role": ["user"], "content": "a role that is not a string"}]}, "messages[0].role"),
        # A part's text is counted into the call's token estimate, so it must be text.
        ({"messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]}, "messages[0].content[0].text"),
        ({"messages": [{"role": "user", "content": ["a part that is not an object"]}]}, "messages[0].content[0]"),
    ],
)
def test_chat_names_with_control_characters_or_the_wrong_type_are_400(http, fields, param):
    body = {"model": "m", "messages": [{"role": "user", "content": "a NUL \x00 in a prompt is text"}], **fields}
    response = http.post("/v1/chat/completions", content=orjson.dumps(body))
    assert response.status_code == 400 and response.json()["error"]["param"] == param


@pytest.mark.parametrize(
    ("path", "status"),
    [("/v1/models%00", 404), ("/v1/chat/completions%00", 404), ("/v1/%00", 404), ("/demo/v1/models%00", 400)],
)
def test_api_paths_with_a_nul_byte_are_404_or_400(http, path, status):
    """/v1/ resolves its own paths (404); with the demo provider off, /demo/v1/ is a page path (400)."""
    response = http.post(path, content=b"{}") if "completions" in path else http.get(path)
    assert response.status_code == status and "error" in response.json()
