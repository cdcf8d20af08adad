"""Answers tell clients whether retrying can help: the official SDK (max_retries=2) does not retry a
502 whose candidates were all skipped for their configuration, nor a 429 budget_exceeded, nor a 403
model_not_allowed; it does get `Retry-After` where a retry can help."""

import time

import openai
import pytest

from routing.models import ApiKey
from routing.services import api_key_create
from tests.billing_fixtures import budget_for
from tests.factories import model_create, provider_create

MESSAGES = [{"role": "user", "content": "hi"}]


@pytest.fixture
def retrying_client(gateway, api_key) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=api_key, max_retries=2, timeout=20)


def one_call(client, model: str, error: type[Exception]):
    started = time.perf_counter()
    with pytest.raises(error) as raised:
        client.chat.completions.create(model=model, messages=MESSAGES, max_tokens=5)
    return raised.value.response, time.perf_counter() - started


def test_all_candidates_skipped_for_a_missing_key_is_not_retried(retrying_client, recorded_calls, monkeypatch):
    monkeypatch.delenv("NOWHERE_API_KEY", raising=False)
    model_create(name="keyless", provider=provider_create(name="nowhere", api_key_env="NOWHERE_API_KEY"))

    response, elapsed = one_call(retrying_client, "keyless", openai.InternalServerError)

    assert response.status_code == 502
    assert response.headers["x-should-retry"] == "false"
    assert "retry-after" not in response.headers
    assert elapsed < 0.5  # the SDK's first retry waits at least 0.5 s
    assert [call.error_code for call in recorded_calls()] == ["all_candidates_failed"]


def test_budget_exceeded_is_not_retried(retrying_client, user, fake_model, recorded_calls):
    fake_model("m", "echo", price=(1000, 1000))
    budget_for(limit="5", spent="5", user=user)

    response, elapsed = one_call(retrying_client, "m", openai.RateLimitError)

    assert response.status_code == 429 and response.json()["error"]["code"] == "budget_exceeded"
    assert response.headers["x-should-retry"] == "false"
    assert elapsed < 0.5
    assert [call.error_code for call in recorded_calls()] == ["budget_exceeded"]


def test_a_model_outside_the_keys_allow_list_is_not_retried(gateway, user, fake_model, recorded_calls):
    allowed, other = fake_model("allowed"), fake_model("other")
    key, raw = api_key_create(user=user, name="narrow")
    ApiKey.objects.get(pk=key.pk).allowed_models.add(allowed)
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=raw, max_retries=2, timeout=20)

    response, _ = one_call(client, other.name, openai.PermissionDeniedError)

    assert response.headers["x-should-retry"] == "false"
    assert len(recorded_calls()) == 1


def test_a_bad_request_says_not_to_retry(http, fake_model):
    fake_model("m")
    response = http.post("/v1/chat/completions", json={"model": "m", "messages": []})
    assert response.status_code == 400
    assert response.headers["x-should-retry"] == "false"


def test_upstreams_that_failed_for_now_get_a_retry_after(http, fake_model, recorded_calls):
    fake_model("down", "echo+status=503")

    response = http.post("/v1/chat/completions", json={"model": "down", "messages": MESSAGES})

    assert response.status_code == 502
    assert (response.headers["x-should-retry"], response.headers["retry-after"]) == ("true", "1")
