"""The admin refuses what cannot work, with the registry file's rules and a message on the field."""

from __future__ import annotations

import pytest
from django.urls import reverse

from billing.models import Budget
from routing.models import ModelEndpoint, Provider, Route
from tests.factories import model_create, provider_create, user_create

pytestmark = [pytest.mark.django_db, pytest.mark.filterwarnings("ignore:No directory at:UserWarning")]


def url(model, action: str, *args) -> str:
    return reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_{action}", args=args)


def management_form(prefix: str, total: int, initial: int = 0) -> dict[str, str]:
    return {
        f"{prefix}-TOTAL_FORMS": str(total),
        f"{prefix}-INITIAL_FORMS": str(initial),
        f"{prefix}-MIN_NUM_FORMS": "0",
        f"{prefix}-MAX_NUM_FORMS": "1000",
    }


def provider_form(**fields) -> dict[str, str]:
    return {"base_url": "https://api.example.test/v1", "connect_timeout_s": "5", "read_timeout_s": "60"} | fields


def form_errors(response) -> dict[str, list[str]]:
    return {field: list(errors) for field, errors in response.context["adminform"].form.errors.items()}


def test_a_route_without_targets_is_refused(admin_client):
    response = admin_client.post(
        url(Route, "add"), {"name": "empty", "strategy": "ordered"} | management_form("targets", 0)
    )

    assert response.status_code == 200
    assert "A route needs at least one target" in response.content.decode()
    assert not Route.objects.filter(name="empty").exists()


def test_removing_every_target_of_a_route_is_refused(admin_client):
    model = model_create(name="m1")
    route = Route.objects.create(name="one")
    target = route.targets.create(model=model, position=0)

    response = admin_client.post(
        url(Route, "change", route.pk),
        {
            "name": "one",
            "strategy": "ordered",
            **management_form("targets", 1, initial=1),
            "targets-0-id": target.pk,
            "targets-0-route": route.pk,
            "targets-0-position": "0",
            "targets-0-model": model.pk,
            "targets-0-weight": "1",
            "targets-0-DELETE": "on",
        },
    )

    assert response.status_code == 200
    assert "A route needs at least one target" in response.content.decode()
    assert route.targets.count() == 1


def test_a_weighted_route_whose_weights_are_0_is_refused_on_the_weight_field(admin_client):
    model = model_create(name="m1")
    response = admin_client.post(
        url(Route, "add"),
        {
            "name": "zero",
            "strategy": "weighted",
            **management_form("targets", 1),
            "targets-0-position": "0",
            "targets-0-model": model.pk,
            "targets-0-weight": "0",
        },
    )

    assert response.status_code == 200
    inline = response.context["inline_admin_formsets"][0].formset
    assert "weight must be a whole number ≥ 1" in " ".join(inline.forms[0].errors["weight"])
    assert not Route.objects.filter(name="zero").exists()


def test_a_base_url_ending_in_chat_completions_is_refused_on_the_field(admin_client):
    response = admin_client.post(
        url(Provider, "add"), provider_form(name="p", base_url="https://api.example.test/v1/chat/completions/")
    )

    assert response.status_code == 200
    assert "without /chat/completions" in form_errors(response)["base_url"][0]


def test_a_provider_name_differing_only_in_case_is_refused_on_the_field(admin_client):
    provider_create(name="openai")

    response = admin_client.post(url(Provider, "add"), provider_form(name="OpenAI"))

    assert response.status_code == 200
    assert "already named 'openai'" in form_errors(response)["name"][0]
    assert Provider.objects.count() == 1


def test_a_path_base_url_is_accepted_for_a_provider_on_routerweb_itself(admin_client):
    response = admin_client.post(url(Provider, "add"), provider_form(name="local", base_url="/demo/v1"))

    assert response.status_code == 302
    assert Provider.objects.get(name="local").base_url == "/demo/v1"


def test_a_cached_input_price_above_the_input_price_is_refused_on_the_field(admin_client):
    provider = provider_create(name="p")
    response = admin_client.post(
        url(ModelEndpoint, "add"),
        {
            "name": "m",
            "provider": provider.pk,
            "kind": "chat",
            "enabled": "on",
            **management_form("prices", 1),
            "prices-0-input_per_mtok": "1",
            "prices-0-output_per_mtok": "2",
            "prices-0-cached_input_per_mtok": "1.5",
            "prices-0-effective_from_0": "2025-01-01",
            "prices-0-effective_from_1": "00:00:00",
        },
    )

    assert response.status_code == 200
    prices = next(f.formset for f in response.context["inline_admin_formsets"] if f.formset.prefix == "prices")
    assert "above the input price" in prices.forms[0].errors["cached_input_per_mtok"][0]
    assert not ModelEndpoint.objects.filter(name="m").exists()


def test_the_budget_form_explains_its_rules_in_sentences(admin_client):
    user = user_create(username="ann")
    Budget.objects.create(user=user, limit_usd=10)

    neither = admin_client.post(url(Budget, "add"), {"limit_usd": "5"})
    twice = admin_client.post(url(Budget, "add"), {"user": user.pk, "limit_usd": "5"})

    for response, sentence in ((neither, "Choose either a user or an API key"), (twice, "already has a budget")):
        page = response.content.decode()
        assert response.status_code == 200
        assert sentence in page
        assert "Constraint" not in page


def test_a_body_storage_rule_with_two_scopes_is_refused_with_a_message(admin_client):
    from billing.body_models import BodyStorage, BodyStorageRule

    user = user_create("scoped")
    route = Route.objects.create(name="scoped-route")
    data = {"storage": BodyStorage.ALL, "user": user.pk, "route": route.pk}
    response = admin_client.post(url(BodyStorageRule, "add"), data)
    assert response.status_code == 200  # the form again, not a redirect
    assert "Choose at most one of user, route and API key" in response.content.decode()
    assert not BodyStorageRule.objects.exists()
