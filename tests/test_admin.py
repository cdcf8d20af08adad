"""The admin: every page renders, objects can be created through its forms, and secrets never reach a page."""

from __future__ import annotations

import hashlib
import io
import re
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from django.core.management import call_command
from django.test import Client
from django.urls import reverse

from billing.models import Budget, Call, Price
from routing.models import ApiKey, ModelEndpoint, Provider, Route
from routing.services import api_key_create, api_key_revoke
from tests.factories import user_create

pytestmark = [
    pytest.mark.django_db,
    # The tests below serve static files from the app directories, so whitenoise finds no STATIC_ROOT.
    pytest.mark.filterwarnings("ignore:No directory at:UserWarning"),
]

CANARY = "sk-canary-1234567890"
ADMIN_MODELS = [Provider, ModelEndpoint, Route, ApiKey, Price, Call]


@pytest.fixture
def seeded(admin_user):
    call_command("seed_demo", stdout=io.StringIO())
    gpt = ModelEndpoint.objects.get(name="gpt-4o")
    key, _ = api_key_create(user=admin_user, name="ci")
    key.allowed_models.add(gpt)
    Call.objects.create(
        request_id="req-0001",
        user=admin_user,
        api_key=key,
        requested="coding",
        model=gpt,
        provider=gpt.provider,
        status=Call.Status.OK,
        http_status=200,
        prompt_tokens=1000,
        completion_tokens=500,
        cost_usd=Decimal("0.0075"),
        attempt_count=1,
        attempts=[{"model": "gpt-4o", "outcome": "ok"}],
    )


def url(model, action: str, *args) -> str:
    return reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_{action}", args=args)


def every_admin_page() -> list[str]:
    pages = [reverse("admin:index")]
    for model in ADMIN_MODELS:
        pages.append(url(model, "changelist"))
        pages += [url(model, "change", pk) for pk in model.objects.values_list("pk", flat=True)]
    return pages


def changelist_row(html: str, obj) -> str:
    """The <tr> of the changelist that links to `obj`."""
    change = url(type(obj), "change", obj.pk)
    rows = [row for row in re.findall(r"<tr.*?</tr>", html, re.DOTALL) if f'href="{change}"' in row]
    assert len(rows) == 1
    return rows[0]


def management_form(prefix: str, total: int) -> dict[str, str]:
    return {
        f"{prefix}-TOTAL_FORMS": str(total),
        f"{prefix}-INITIAL_FORMS": "0",
        f"{prefix}-MIN_NUM_FORMS": "0",
        f"{prefix}-MAX_NUM_FORMS": "1000",
    }


@pytest.mark.parametrize("model", ADMIN_MODELS, ids=lambda m: m.__name__)
def test_changelist_renders(admin_client, seeded, model):
    response = admin_client.get(url(model, "changelist"))

    assert response.status_code == 200
    assert response.context["cl"].result_count == model.objects.count() > 0


@pytest.mark.parametrize("model", [Provider, ModelEndpoint, Route, ApiKey, Price], ids=lambda m: m.__name__)
def test_add_page_renders(admin_client, seeded, model):
    response = admin_client.get(url(model, "add"))

    assert response.status_code == 200
    assert "adminform" in response.context


def test_calls_cannot_be_added_or_edited_only_viewed(admin_client, seeded):
    call = Call.objects.get()

    assert admin_client.get(url(Call, "add")).status_code == 403
    response = admin_client.get(url(Call, "change", call.pk))
    assert response.status_code == 200
    assert 'name="_save"' not in response.content.decode()
    assert "req-0001" in response.content.decode()


@pytest.mark.parametrize("model", ADMIN_MODELS, ids=lambda m: m.__name__)
def test_change_pages_of_seeded_objects_render(admin_client, seeded, model):
    pks = list(model.objects.values_list("pk", flat=True))
    assert pks

    for pk in pks:
        response = admin_client.get(url(model, "change", pk))
        assert response.status_code == 200, (model.__name__, pk)


def test_admin_requires_a_staff_login(seeded):
    user_create("mallory")
    client = Client()
    assert client.login(username="mallory", password="test-password-1234")

    for page in [reverse("admin:index"), url(Provider, "changelist"), url(ApiKey, "changelist")]:
        response = client.get(page)
        assert response.status_code == 302
        assert response["Location"].startswith(reverse("admin:login"))


def test_no_admin_page_contains_a_provider_key_value(admin_client, seeded, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", CANARY)
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    pages = every_admin_page() + [url(model, "add") for model in ADMIN_MODELS if model is not Call]
    assert len(pages) > 30

    for page in pages:
        response = admin_client.get(page)
        assert response.status_code == 200, page
        assert CANARY.encode() not in response.content, page

    html = admin_client.get(url(Provider, "changelist")).content.decode()
    openai = changelist_row(html, Provider.objects.get(name="openai"))
    assert re.search(r'<td class="field-key_is_set"><img src="[^"]*icon-yes[^"]*\.svg"', openai)
    anthropic = changelist_row(html, Provider.objects.get(name="anthropic"))
    assert re.search(r'<td class="field-key_is_set"><img src="[^"]*icon-no[^"]*\.svg"', anthropic)
    ollama = changelist_row(html, Provider.objects.get(name="ollama"))
    assert re.search(r'<td class="field-key_is_set"><img src="[^"]*icon-yes[^"]*\.svg"', ollama)


def test_admin_adds_a_provider(admin_client):
    response = admin_client.post(
        url(Provider, "add"),
        {
            "name": "groq",
            "api_format": "openai",
            "base_url": "https://api.groq.com/openai/v1/",
            "api_key_env": "GROQ_API_KEY",
            "connect_timeout_s": "3",
            "read_timeout_s": "45",
            "enabled": "on",
        },
    )

    assert response.status_code == 302
    provider = Provider.objects.get(name="groq")
    assert (provider.base_url, provider.api_key_env, provider.connect_timeout_s, provider.read_timeout_s) == (
        "https://api.groq.com/openai/v1",
        "GROQ_API_KEY",
        3.0,
        45.0,
    )


def test_admin_refuses_a_provider_with_a_bad_url_or_key_variable(admin_client):
    response = admin_client.post(
        url(Provider, "add"),
        {
            "name": "files",
            "base_url": "ftp://files.example.test",
            "api_key_env": "sk-not-a-variable",
            "connect_timeout_s": "5",
            "read_timeout_s": "60",
        },
    )

    assert response.status_code == 200
    assert set(response.context["adminform"].form.errors) == {"base_url", "api_key_env"}
    assert not Provider.objects.exists()


def test_admin_adds_a_model_with_a_price_through_the_inline(admin_client, seeded):
    add_page = admin_client.get(url(ModelEndpoint, "add")).content.decode()
    assert 'name="prices-TOTAL_FORMS"' in add_page
    assert 'name="prices-__prefix__-input_per_mtok"' in add_page
    provider = Provider.objects.get(name="ollama")

    response = admin_client.post(
        url(ModelEndpoint, "add"),
        {
            "name": "qwen2.5-coder",
            "provider": provider.pk,
            "kind": "chat",  # the select's initial value, which a browser sends
            "upstream_model": "qwen2.5-coder:7b",
            "context_window": "32768",
            "max_output_tokens": "",
            "enabled": "on",
            **management_form("prices", 1),
            "prices-0-input_per_mtok": "0.05",
            "prices-0-output_per_mtok": "0.1",
            "prices-0-cached_input_per_mtok": "",
            "prices-0-effective_from_0": "2025-01-01",
            "prices-0-effective_from_1": "00:00:00",
        },
    )

    assert response.status_code == 302, response.context and response.context["errors"]
    model = ModelEndpoint.objects.get(name="qwen2.5-coder")
    assert (model.provider, model.upstream_model, model.context_window, model.max_output_tokens) == (
        provider,
        "qwen2.5-coder:7b",
        32768,
        None,
    )
    price = model.prices.get()
    assert (price.input_per_mtok, price.output_per_mtok, price.cached_input_per_mtok, price.source) == (
        Decimal("0.05"),
        Decimal("0.1"),
        None,
        Price.Source.MANUAL,
    )
    assert price.effective_from == datetime(2025, 1, 1, tzinfo=UTC)


def test_admin_refuses_a_model_named_like_a_route(admin_client, seeded):
    response = admin_client.post(
        url(ModelEndpoint, "add"),
        {"name": "coding", "provider": Provider.objects.get(name="openai").pk, "kind": "chat", "enabled": "on"}
        | management_form("prices", 0),
    )

    assert response.status_code == 200
    assert "name" in response.context["adminform"].form.errors
    assert not ModelEndpoint.objects.filter(name="coding").exists()


def test_admin_adds_a_route_with_two_targets(admin_client, seeded):
    add_page = admin_client.get(url(Route, "add")).content.decode()
    assert 'name="targets-TOTAL_FORMS"' in add_page
    first, second = ModelEndpoint.objects.get(name="deepseek-chat"), ModelEndpoint.objects.get(name="gpt-4o-mini")

    response = admin_client.post(
        url(Route, "add"),
        {
            "name": "budget",
            "strategy": "weighted",
            "description": "Mostly DeepSeek",
            **management_form("targets", 2),
            "targets-0-position": "0",
            "targets-0-model": first.pk,
            "targets-0-weight": "9",
            "targets-1-position": "1",
            "targets-1-model": second.pk,
            "targets-1-weight": "1",
        },
    )

    assert response.status_code == 302, response.context and response.context["errors"]
    route = Route.objects.get(name="budget")
    assert (route.strategy, route.description) == (Route.Strategy.WEIGHTED, "Mostly DeepSeek")
    assert [(t.position, t.model, t.weight) for t in route.targets.all()] == [(0, first, 9), (1, second, 1)]


def test_admin_refuses_the_same_model_twice_in_a_route(admin_client, seeded):
    model = ModelEndpoint.objects.get(name="gpt-4o")

    response = admin_client.post(
        url(Route, "add"),
        {
            "name": "twice",
            "strategy": "ordered",
            **management_form("targets", 2),
            "targets-0-position": "0",
            "targets-0-model": model.pk,
            "targets-0-weight": "1",
            "targets-1-position": "1",
            "targets-1-model": model.pk,
            "targets-1-weight": "1",
        },
    )

    assert response.status_code == 200
    assert not Route.objects.filter(name="twice").exists()


def test_admin_adding_an_api_key_shows_the_raw_key_once_and_stores_only_its_hash(admin_client, admin_user, seeded):
    gpt = ModelEndpoint.objects.get(name="gpt-4o")

    response = admin_client.post(
        url(ApiKey, "add"), {"user": admin_user.pk, "name": "laptop", "allowed_models": [gpt.pk], "allowed_routes": []}
    )

    # Redirect after post: reloading the key's page shows it no more and creates no other key.
    assert response.status_code == 302
    shown = admin_client.get(response["Location"])
    assert shown.status_code == 200 and "no-store" in shown["Cache-Control"]
    reloaded = admin_client.get(response["Location"]).content.decode()
    assert "cannot be shown again" in reloaded and 'id="new-api-key"' not in reloaded
    assert ApiKey.objects.filter(name="laptop").count() == 1
    assert 'id="copy-api-key"' in shown.content.decode()
    html = shown.content.decode()
    match = re.search(r'<pre id="new-api-key"[^>]*>(rw-[A-Za-z0-9_-]+)</pre>', html)
    assert match, html
    raw = match.group(1)
    key = ApiKey.objects.get(name="laptop")
    assert key.key_hash == hashlib.sha256(raw.encode()).hexdigest()
    assert key.prefix == raw[:10]
    assert key.user == admin_user
    assert list(key.allowed_models.all()) == [gpt]
    assert ApiKey.objects.filter(key_hash=raw).count() == 0

    for page in [url(ApiKey, "change", key.pk), url(ApiKey, "changelist"), reverse("admin:index")]:
        response = admin_client.get(page)
        assert response.status_code == 200
        assert raw not in response.content.decode(), page
        assert key.key_hash not in response.content.decode(), page
    assert key.prefix in admin_client.get(url(ApiKey, "change", key.pk)).content.decode()


def test_revoke_action_revokes_the_selected_keys(admin_client, admin_user):
    first, _ = api_key_create(user=admin_user, name="first")
    second, _ = api_key_create(user=admin_user, name="second")
    kept, _ = api_key_create(user=admin_user, name="kept")
    already, _ = api_key_create(user=admin_user, name="already")
    api_key_revoke(key=already)
    already.refresh_from_db()
    revoked_before = already.revoked_at

    response = admin_client.post(
        url(ApiKey, "changelist"),
        {"action": "revoke", "_selected_action": [first.pk, second.pk, already.pk], "index": "0"},
        follow=True,
    )

    assert response.status_code == 200
    assert "Revoked." in response.content.decode()
    for key in (first, second, kept, already):
        key.refresh_from_db()
    assert first.revoked_at is not None and second.revoked_at is not None
    assert not first.is_active and not second.is_active
    assert kept.revoked_at is None
    assert already.revoked_at == revoked_before


def test_a_budgets_page_lists_the_allowances_workers_hold_and_its_limit_can_be_changed(admin_client, admin_user):
    from datetime import timedelta

    from django.utils import timezone

    from billing.models import Budget, BudgetAllowance

    budget = Budget.objects.create(user=admin_user, limit_usd=Decimal("10"))
    allowance = BudgetAllowance.objects.create(
        id="5b1f6a64-7c0e-4a4f-9d55-0f4a1c2b3d4e",
        budget=budget,
        period_start=timezone.now().date().replace(day=1),
        amount_usd=Decimal("0.125"),
        expires_at=timezone.now() + timedelta(seconds=30),
    )
    page = admin_client.get(url(Budget, "change", budget.pk))
    assert page.status_code == 200
    assert "Allowances held by workers" in page.text and "0.125" in page.text
    form = {
        "user": admin_user.pk,
        "limit_usd": "20",
        "allowances-TOTAL_FORMS": "1",
        "allowances-INITIAL_FORMS": "1",
        "allowances-0-id": str(allowance.pk),
        "allowances-0-budget": str(budget.pk),
    }
    assert admin_client.post(url(Budget, "change", budget.pk), form).status_code == 302
    budget.refresh_from_db()
    assert budget.limit_usd == Decimal("20") and budget.allowances.get().amount_usd == Decimal("0.125")


def test_money_reads_as_on_the_dashboard(admin_client, seeded, admin_user):
    """Budgets, calls and prices show dollars as billing/money.py writes them, not the columns' raw
    decimals ($25.000000/month, spent 0.000000000000)."""
    budget = Budget.objects.create(user=admin_user, limit_usd=Decimal("12.5"))
    assert str(budget).endswith(": $12.50/month")
    budgets = admin_client.get(url(Budget, "changelist")).content.decode()
    assert "$12.50" in budgets and "0.000000" not in budgets
    change = admin_client.get(url(Budget, "change", budget.pk)).content.decode()
    assert "$0.00" in change and "0.000000000000" not in change
    calls = admin_client.get(url(Call, "changelist")).content.decode()
    assert "$0.0075" in calls and "0.007500" not in calls
    prices = admin_client.get(url(Price, "changelist")).content.decode()
    assert "$2.50" in prices and "2.500000" not in prices
