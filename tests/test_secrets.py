"""A provider's key variable is named, not arbitrary: the exfiltration case of issue 14, refused in the
admin, in `import_registry` and at call time, with the one allow-list of routing/secrets.py."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
import yaml
from django.core.management import CommandError, call_command
from django.urls import reverse

from routing.models import Provider
from routing.secrets import OWN_VARIABLES, api_key_env_refusal, provider_api_key
from tests.factories import model_create

REPO_ROOT = Path(__file__).resolve().parent.parent
STOLEN = ["SECRET_KEY", "DATABASE_URL", "REDIS_URL", "ROUTERWEB_ADMIN_PASSWORD", "DJANGO_SETTINGS_MODULE", "HOME"]


@pytest.mark.parametrize("name", STOLEN)
def test_routerweb_own_and_arbitrary_variables_are_refused(name, settings):
    settings.ROUTERWEB_KEY_VARIABLES = frozenset(STOLEN)  # an operator's setting cannot allow its own secrets
    refusal = api_key_env_refusal(name)
    if name == "HOME":
        assert refusal is None  # listed by the operator, and not one of routerweb's
    else:
        assert refusal == f"{name} is one of routerweb's own settings, never a provider key"


@pytest.mark.parametrize("name", ["OPENAI_API_KEY", "HF_TOKEN", "AZURE_OPENAI_API_KEY"])
def test_key_variables_are_allowed(name):
    assert api_key_env_refusal(name) is None


def test_other_names_need_the_operators_setting(settings):
    assert "not a key variable" in api_key_env_refusal("PATH")
    settings.ROUTERWEB_KEY_VARIABLES = frozenset({"MY_GATEWAY_SECRET"})
    assert api_key_env_refusal("MY_GATEWAY_SECRET") is None


def test_a_refused_variable_is_never_read(monkeypatch):
    monkeypatch.setenv("SECRET_KEY", "the-django-secret")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-fine")
    assert provider_api_key("SECRET_KEY") is None
    assert provider_api_key("OPENAI_API_KEY") == "sk-fine"
    assert provider_api_key("") is None


def test_every_variable_routerweb_reads_is_one_of_its_own():
    settings_text = (REPO_ROOT / "routerweb" / "settings.py").read_text()
    read = set(re.findall(r'env\.\w+\(\s*"([A-Z0-9_]+)"', settings_text))
    example = set(re.findall(r"^#? ?([A-Z][A-Z0-9_]*)=", (REPO_ROOT / ".env.example").read_text(), re.M))
    provider_keys = {name for name in example if name.endswith(("_API_KEY", "_TOKEN"))}
    assert read and read <= example
    for name in (read | example) - provider_keys:
        assert name in OWN_VARIABLES or name.startswith(("ROUTERWEB_", "DJANGO_")), name


@pytest.mark.django_db
@pytest.mark.parametrize("name", ["SECRET_KEY", "DATABASE_URL"])
def test_the_admin_form_refuses_it_on_the_field(admin_client, name):
    response = admin_client.post(
        reverse("admin:routing_provider_add"),
        {
            "name": "listener",
            "base_url": "http://127.0.0.1:9/v1",
            "api_key_env": name,
            "connect_timeout_s": "5",
            "read_timeout_s": "60",
            "enabled": "on",
        },
    )
    assert response.status_code == 200
    assert response.context["adminform"].form.errors["api_key_env"] == [
        f"{name} is one of routerweb's own settings, never a provider key."
    ]
    assert not Provider.objects.exists()


@pytest.mark.django_db
def test_import_registry_refuses_it_and_applies_nothing(tmp_path):
    path = tmp_path / "registry.yaml"
    providers = [
        {"name": "fine", "base_url": "https://api.openai.com/v1", "api_key_env": "OPENAI_API_KEY"},
        {"name": "listener", "base_url": "http://127.0.0.1:9/v1", "api_key_env": "SECRET_KEY"},
    ]
    path.write_text(yaml.safe_dump({"providers": providers}))
    with pytest.raises(CommandError, match=r"providers \(listener\): api_key_env: SECRET_KEY is one of routerweb"):
        call_command("import_registry", str(path), stdout=io.StringIO())
    assert not Provider.objects.exists()


def test_at_call_time_the_candidate_is_skipped_with_the_reason(http, fake_model, fake_provider, fake_upstream):
    """A provider saved before the check existed (or written to the table directly) sends nothing."""
    Provider.objects.filter(pk=fake_provider.pk).update(api_key_env="SECRET_KEY")
    model_create(name="echo-model", provider=fake_provider, upstream_model="echo")  # saves: reloads the registry
    response = http.post(
        "/v1/chat/completions", json={"model": "echo-model", "messages": [{"role": "user", "content": "hi"}]}
    )
    assert response.status_code == 502
    reason = "SECRET_KEY is one of routerweb's own settings, never a provider key"
    assert response.json()["error"]["message"] == f"All candidates failed: echo-model: skipped, {reason}."
    assert fake_upstream.app.stats()["requests"] == 0
