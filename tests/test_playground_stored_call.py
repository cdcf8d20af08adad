"""A stored call loaded back for the playground (`/playground/api/stored/<id>`): the conversation, the
parameters and the recorded call through the metering seam, under the dashboard's access rules."""

import httpx

from billing.body_models import BodyStorageRule
from tests.conftest import calls_settle
from tests.factories import spend_viewers_group, user_create

URL = "/playground/api/stored/{}"
MESSAGES = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "What is a gateway?"},
    {"role": "assistant", "content": "A front door for APIs."},
    {"role": "user", "content": "And a fallback?"},
]


def store_a_call(http: httpx.Client, model: str, **body) -> str:
    response = http.post("/playground/api/chat", json={"model": model, "messages": MESSAGES, **body})
    assert response.status_code == 200, response.text
    calls_settle()
    return response.headers["X-Request-Id"]


def test_own_stored_call_comes_back_with_conversation_parameters_and_trace(login, user, fake_model):
    fake_model("m1", "echo+words=5", price=(1, 2))
    BodyStorageRule.objects.create(storage="all")
    alice = login("alice", "pw-alice-123")
    request_id = store_a_call(alice, "m1", temperature=0.3, max_tokens=50)

    body = alice.get(URL.format(request_id)).json()

    assert body["own"] is True and body["body_stored"] is True
    assert body["messages"] == MESSAGES
    assert body["parameters"]["temperature"] == 0.3 and body["parameters"]["max_tokens"] == 50
    assert body["answer"].startswith("Echo: And a fallback?")
    call = body["call"]
    assert (call["request_id"], call["requested"], call["model"], call["status"]) == (request_id, "m1", "m1", "ok")
    assert call["cost_usd"] and call["attempts"][0]["text"].startswith("m1: ok after")
    assert call["price_text"].startswith("price #")


def test_access_rules_are_the_dashboards(login, user, fake_model):
    fake_model("m1", "echo", price=(1, 2))
    BodyStorageRule.objects.create(storage="all")
    alice = login("alice", "pw-alice-123")
    request_id = store_a_call(alice, "m1")
    user_create("bob")
    bob = login("bob", "test-password-1234")
    not_found = bob.get(URL.format(request_id))
    unknown = bob.get(URL.format("req_doesnotexist"))
    assert not_found.status_code == unknown.status_code == 404
    assert not_found.json()["error"]["code"] == unknown.json()["error"]["code"] == "call_not_found"
    assert "And a fallback" not in not_found.text

    root = user_create("root")
    root.groups.add(spend_viewers_group())
    viewer = login("root", "test-password-1234")
    seen = viewer.get(URL.format(request_id)).json()
    assert seen["messages"] == MESSAGES and seen["own"] is False


def test_a_call_without_a_stored_body_and_bad_ids(login, user, fake_model):
    fake_model("m1", "echo", price=(1, 2))
    alice = login("alice", "pw-alice-123")
    request_id = store_a_call(alice, "m1")  # storage is off by default
    response = alice.get(URL.format(request_id))
    assert response.status_code == 404 and response.json()["error"]["code"] == "body_not_stored"
    for bad in ("a" * 41, "bad%00id", "x y"):
        response = alice.get(URL.format(bad))
        assert response.status_code in (400, 404) and "error" in response.json()
    assert httpx.get(f"{alice.base_url}{URL.format(request_id)}").status_code == 401
