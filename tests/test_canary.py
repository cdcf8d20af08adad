"""The canary test: every provider key variable holds a unique value; after calls that succeed, fail and fall
back, no page (admin included, as each role), error response, log line, export, spool file or table row
contains any of them. The fake upstream receiving them proves they were in use."""

from __future__ import annotations

import io
import logging
import secrets

import httpx
import pytest
from django.apps import apps
from django.conf import settings
from django.contrib import admin
from django.core.management import call_command
from django.test import Client
from django.urls import reverse

from routing.models import ModelEndpoint, Provider
from testkit.live import free_port
from tests.factories import spend_viewers_group, user_create

KEY_VARIABLES = ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "DEEPSEEK_API_KEY", "DASHSCOPE_API_KEY")
HELLO = [{"role": "user", "content": "hello"}]
CHANGE_PAGES_PER_MODEL = 20


@pytest.fixture
def canaries(monkeypatch) -> dict[str, str]:
    values = {name: f"canary-{name.lower()}-{secrets.token_hex(12)}" for name in KEY_VARIABLES}
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    return values


def provider_point(name: str, base_url: str) -> None:
    provider = Provider.objects.get(name=name)
    provider.base_url = base_url
    provider.save()  # a save, not an update: every worker reloads its registry


def model_upstream(name: str, upstream: str) -> None:
    model = ModelEndpoint.objects.get(name=name)
    model.upstream_model = upstream
    model.save()


def api_traffic(http: httpx.Client, gateway_url: str) -> list[str]:
    """Calls that succeed, fall back, fail in every way and are refused; returns every response body."""
    bodies = []
    for model in ("gpt-4o", "claude-sonnet-4", "deepseek-chat", "qwen-max", "coding", "no-such-model"):
        bodies.append(http.post("/v1/chat/completions", json={"model": model, "messages": HELLO}).text)
    streamed = http.post("/v1/chat/completions", json={"model": "coding", "messages": HELLO, "stream": True})
    bodies += [streamed.text, http.get("/v1/models").text, http.get("/v1/models/gpt-4o").text]
    bodies.append(http.post("/v1/chat/completions", content=b"{not json").text)
    bodies.append(httpx.get(f"{gateway_url}/v1/models", headers={"Authorization": "Bearer rw-wrong"}).text)
    return bodies


def pages_as(user) -> list[str]:
    """Every admin page (changelists, add pages, change pages), the dashboard's page, JSON and CSV, and the
    playground as `user` sees them (or is refused them)."""
    client = Client()
    client.force_login(user)
    paths = [reverse("admin:index"), "/dashboard/", "/dashboard/data.json", "/playground/", "/accounts/login/"]
    for model in admin.site._registry:
        prefix = f"admin:{model._meta.app_label}_{model._meta.model_name}"
        paths += [reverse(f"{prefix}_changelist"), reverse(f"{prefix}_add")]
        for pk in model.objects.values_list("pk", flat=True)[:CHANGE_PAGES_PER_MODEL]:
            paths.append(reverse(f"{prefix}_change", args=[pk]))
    texts = [client.get(path).content.decode(errors="replace") for path in paths]
    export = client.get("/dashboard/export.csv")
    texts.append(b"".join(export.streaming_content).decode() if export.streaming else export.content.decode())
    return texts


def every_table() -> list[str]:
    return [repr(list(model.objects.values())) for model in apps.get_models()]


def spool_files() -> list[str]:
    return [path.read_text(errors="replace") for path in settings.ROUTERWEB_SPOOL_DIR.rglob("*") if path.is_file()]


@pytest.mark.filterwarnings("ignore:No directory at:UserWarning")
def test_no_provider_key_appears_anywhere(
    gateway, http, fake_upstream, canaries, caplog, settings, recorded_calls, user
):
    caplog.set_level(logging.DEBUG)
    settings.ROUTERWEB_PUBLIC_URL = gateway.url
    settings.ROUTERWEB_DEMO_PROVIDER = True
    call_command("seed_demo", stdout=io.StringIO())
    fake = f"{fake_upstream.url}/v1"
    provider_point("openai", fake)  # answers
    provider_point("anthropic", fake)
    model_upstream("claude-sonnet-4", "echo+status=401")  # rejects the key: falls back, circuit opens
    provider_point("deepseek", f"http://127.0.0.1:{free_port()}/v1")  # connection refused
    provider_point("dashscope", fake)
    model_upstream("qwen-max", "echo+status=400")  # the client's error, passed on

    outputs = api_traffic(http, gateway.url)
    sent = fake_upstream.app.stats()["last_headers"]["authorization"]
    assert sent in {f"Bearer {value}" for value in canaries.values()}  # the keys were really used
    assert len(recorded_calls()) >= 6

    superuser = user_create("root", is_staff=True, is_superuser=True)
    staff = user_create("staff", is_staff=True)
    spend_viewer = user_create("viewer", is_staff=True)
    spend_viewer.groups.add(spend_viewers_group())
    for viewer in (superuser, staff, spend_viewer, user):
        outputs += pages_as(viewer)
    export = io.StringIO()
    call_command("export_registry", stdout=export)
    outputs += [export.getvalue(), caplog.text, *every_table(), *spool_files()]
    outputs += [f"{record.getMessage()} {record.exc_text or ''}" for record in caplog.records]

    assert len(outputs) > 150
    for name, value in canaries.items():
        leaks = [text[max(0, text.find(value) - 200) : text.find(value) + 50] for text in outputs if value in text]
        assert not leaks, (name, leaks[:2])
