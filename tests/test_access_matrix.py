"""The authorization matrix: every URL of the project against every kind of caller, with the status each gets.

Callers are browser sessions (anonymous, a user, staff without permissions, staff with the spend
permission, a superuser) and API keys sent as `Authorization: Bearer` without a session (a /v1 key,
a revoked one, one scoped to model m1, one with the read scope, another user's read-scoped key, and
a read-scoped key of an inactive user). Everything goes through the live ASGI application, so /v1
(the lean handler) and the pages (Django's stack) are both what production serves.

`test_every_url_has_a_row` fails when a URL is added without its row here; the admin's pages follow
one rule for every registered model, checked for each of them.
"""

from __future__ import annotations

import secrets

import httpx
import pytest
from django.contrib import admin
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, reverse

from routing.services import api_key_create, api_key_revoke
from tests.factories import spend_viewers_group, user_create

CALLERS = (
    "anonymous",
    "user",
    "staff",
    "staff_spend",
    "superuser",
    "key",
    "key_revoked",
    "key_scoped",
    "key_read",
    "key_other",
    "key_inactive",
)
HELLO = [{"role": "user", "content": "hi"}]
CHAT = {"model": "m2", "messages": HELLO}
MESSAGE = {"model": "m2", "max_tokens": 5, "messages": HELLO}  # /v1/messages (Anthropic's Messages API)

# What each kind of URL answers, caller by caller (in CALLERS order).
PAGE = (302, 200, 200, 200, 200, 302, 302, 302, 302, 302, 302)  # login page for anyone without a session
SESSION_JSON = (401, 200, 200, 200, 200, 401, 401, 401, 401, 401, 401)
SPEND_JSON = (401, 200, 200, 200, 200, 403, 401, 403, 200, 200, 401)
# ?user=alice ("user" is alice; the /v1 and read-scoped keys are hers, key_other is bob's).
SPEND_JSON_OF_ALICE = (401, 200, 400, 200, 200, 403, 401, 403, 200, 400, 401)
V1 = (401, 401, 401, 401, 401, 200, 401, 200, 200, 200, 401)
EVERYONE = (200,) * len(CALLERS)

# route pattern -> [(method, path, json body, statuses)]
ROWS: dict[str, list[tuple[str, str, dict | None, tuple[int, ...]]]] = {
    "": [("GET", "/", None, (302,) * len(CALLERS))],
    "accounts/login/": [("GET", "/accounts/login/", None, EVERYONE)],
    "healthz": [("GET", "/healthz", None, EVERYONE)],
    "readyz": [("GET", "/readyz", None, EVERYONE)],
    # No ROUTERWEB_METRICS_TOKEN in the tests: staff sessions only, and 404 for everyone else.
    "metrics": [("GET", "/metrics", None, (404, 404, 200, 200, 200, *(404,) * 6))],
    "playground/": [("GET", "/playground/", None, PAGE)],
    "playground/api/chat": [("POST", "/playground/api/chat", CHAT, SESSION_JSON)],
    "playground/api/calls/<str:request_id>": [
        ("GET", "/playground/api/calls/req-unknown", None, (401, 404, 404, 404, 404, *(401,) * 6))
    ],
    # An unknown request id and another user's are the same 404 (tests/test_playground_stored_call.py).
    "playground/api/stored/<str:request_id>": [
        ("GET", "/playground/api/stored/req-unknown", None, (401, 404, 404, 404, 404, *(401,) * 6))
    ],
    "playground/api/votes": [("POST", "/playground/api/votes", {}, (401, 400, 400, 400, 400, *(401,) * 6))],
    "dashboard/": [("GET", "/dashboard/", None, PAGE)],
    "dashboard/data.json": [
        ("GET", "/dashboard/data.json", None, SPEND_JSON),
        ("GET", "/dashboard/data.json?user=alice", None, SPEND_JSON_OF_ALICE),
    ],
    "dashboard/whatif.json": [
        ("GET", "/dashboard/whatif.json?whatif=m2", None, SPEND_JSON),
        ("GET", "/dashboard/whatif.json?whatif=m2&user=alice", None, SPEND_JSON_OF_ALICE),
    ],
    "dashboard/export.csv": [
        ("GET", "/dashboard/export.csv", None, SPEND_JSON),
        ("GET", "/dashboard/export.csv?user=alice", None, SPEND_JSON_OF_ALICE),
    ],
    "calls/": [("GET", "/calls/", None, PAGE)],
    # An unknown request id and another user's are the same 404 (tests/test_call_pages.py).
    "calls/<str:request_id>/": [("GET", "/calls/req-unknown/", None, (302, 404, 404, 404, 404, *(302,) * 6))],
    "v1/chat/completions": [
        ("POST", "/v1/chat/completions", CHAT, (*V1[:7], 403, *V1[8:])),  # the scoped key may use m1 only
        ("POST", "/v1/chat/completions", {"model": "m1", "messages": HELLO}, V1),
    ],
    "v1/messages": [
        ("POST", "/v1/messages", MESSAGE, (*V1[:7], 403, *V1[8:])),  # the scoped key may use m1 only
        ("POST", "/v1/messages", {**MESSAGE, "model": "m1"}, V1),
    ],
    "v1/messages/count_tokens": [
        ("POST", "/v1/messages/count_tokens", MESSAGE, (*V1[:7], 403, *V1[8:])),
        ("POST", "/v1/messages/count_tokens", {**MESSAGE, "model": "m1"}, V1),
    ],
    # m1 is a chat model: a caller who gets past the key check is refused on its kind (400).
    "v1/embeddings": [
        ("POST", "/v1/embeddings", {"model": "m1", "input": "hi"}, tuple(400 if s == 200 else s for s in V1))
    ],
    "v1/models": [("GET", "/v1/models", None, V1)],
    "v1/models/<path:model_id>": [
        ("GET", "/v1/models/m2", None, (*V1[:7], 404, *V1[8:])),  # m2 is outside the scoped key's list
        ("GET", "/v1/models/m1", None, V1),
    ],
    # Last: it ends the sessions.
    "accounts/logout/": [("POST", "/accounts/logout/", None, (302,) * len(CALLERS))],
}
# The demo provider: served to anyone (no key, nothing secret) only with ROUTERWEB_DEMO_PROVIDER on.
DEMO_ROWS = [
    ("POST", "/demo/v1/chat/completions", {"model": "demo-echo", "messages": HELLO}),
    ("GET", "/demo/v1/models", None),
]

ADMIN_INDEX = (302, 302, 200, 200, 200, *(302,) * 6)
ADMIN_CHANGELIST = (302, 302, 403, 403, 200, *(302,) * 6)


def url_patterns(patterns=None, prefix: str = "") -> list[str]:
    """Every route of the project's URLconf and of the API's, the admin's excepted."""
    if patterns is None:
        return url_patterns(get_resolver().url_patterns) + url_patterns(get_resolver("routing.api_urls").url_patterns)
    routes = []
    for pattern in patterns:
        if isinstance(pattern, URLResolver):
            if pattern.namespace != "admin":
                routes += url_patterns(pattern.url_patterns, prefix + str(pattern.pattern))
        elif isinstance(pattern, URLPattern):
            routes.append(prefix + str(pattern.pattern))
    return routes


def test_every_url_has_a_row():
    assert sorted(url_patterns()) == sorted(ROWS)


@pytest.fixture
def callers(gateway, fake_model, transactional_db) -> dict[str, httpx.Client]:
    alice = user_create("alice")
    bob = user_create("bob")
    carol = user_create("carol")
    sessions = {
        "anonymous": None,
        "user": alice,
        "staff": user_create("staff", is_staff=True),
        "staff_spend": user_create("staff-spend", is_staff=True),
        "superuser": user_create("root", is_staff=True, is_superuser=True),
    }
    sessions["staff_spend"].groups.add(spend_viewers_group())
    m1, _ = fake_model("m1"), fake_model("m2", price=(1, 2))  # m2 priced: the what-if question can use it
    revoked, revoked_raw = api_key_create(user=alice, name="revoked")
    api_key_revoke(key=revoked)
    scoped, scoped_raw = api_key_create(user=alice, name="m1 only")
    scoped.allowed_models.add(m1)
    keys = {
        "key": api_key_create(user=alice, name="v1")[1],
        "key_revoked": revoked_raw,
        "key_scoped": scoped_raw,
        "key_read": api_key_create(user=alice, name="report", reads_dashboard=True)[1],
        "key_other": api_key_create(user=bob, name="report", reads_dashboard=True)[1],
        "key_inactive": api_key_create(user=carol, name="report", reads_dashboard=True)[1],
    }
    carol.is_active = False
    carol.save()
    clients = {}
    for name in CALLERS:
        csrf = secrets.token_hex(16)  # as the page would: the csrftoken cookie, echoed in X-CSRFToken
        cookies = [f"csrftoken={csrf}"]
        if sessions.get(name) is not None:
            django_client = Client()
            django_client.force_login(sessions[name])
            cookies.append(f"sessionid={django_client.cookies['sessionid'].value}")
        headers = {"X-CSRFToken": csrf, "Cookie": "; ".join(cookies)}
        if name in keys:
            headers["Authorization"] = f"Bearer {keys[name]}"
        http = httpx.Client(base_url=gateway.url, timeout=20, headers=headers)
        clients[name] = http
    yield clients
    for http in clients.values():
        http.close()


def statuses(clients: dict[str, httpx.Client], method: str, path: str, body: dict | None) -> tuple[int, ...]:
    return tuple(clients[name].request(method, path, json=body).status_code for name in CALLERS)


def test_every_url_answers_each_caller_as_the_matrix_says(callers):
    for rows in ROWS.values():
        for method, path, body, expected in rows:
            got = statuses(callers, method, path, body)
            assert dict(zip(CALLERS, got, strict=True)) == dict(zip(CALLERS, expected, strict=True)), (method, path)


def test_every_admin_page_needs_staff_and_each_models_permission(callers):
    assert statuses(callers, "GET", reverse("admin:index"), None) == ADMIN_INDEX
    models = list(admin.site._registry)
    assert len(models) >= 8
    for model in models:
        changelist = reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist")
        assert statuses(callers, "GET", changelist, None) == ADMIN_CHANGELIST, changelist


def test_the_demo_provider_is_public_when_on_and_absent_when_off(callers, settings):
    settings.ROUTERWEB_DEMO_PROVIDER = False
    for method, path, body in DEMO_ROWS:
        assert statuses(callers, method, path, body) == (404,) * len(CALLERS), path
    settings.ROUTERWEB_DEMO_PROVIDER = True
    for method, path, body in DEMO_ROWS:
        assert statuses(callers, method, path, body) == EVERYONE, path
