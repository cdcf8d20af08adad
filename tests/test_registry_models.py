"""Model validation of the registry and prices: what `full_clean()` and `price_set` accept and refuse."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from billing.models import Price
from billing.services import price_current, price_set
from routing.models import ModelEndpoint, Provider, Route, RouteTarget
from tests.factories import model_create, provider_create, route_create

pytestmark = pytest.mark.django_db


def _errors(obj) -> dict[str, list[str]]:
    with pytest.raises(ValidationError) as exc_info:
        obj.full_clean()
    return exc_info.value.message_dict


@pytest.mark.parametrize("base_url", ["ftp://x", "ftp://files.example.com/v1", "not a url", "javascript:alert(1)", ""])
def test_provider_base_url_must_be_http_or_https(base_url):
    errors = _errors(Provider(name="p", base_url=base_url))

    assert list(errors) == ["base_url"]


@pytest.mark.parametrize(
    "base_url", ["http://127.0.0.1:11434/v1", "https://api.openai.com/v1", "http://localhost:8000/demo/v1"]
)
def test_provider_base_url_accepts_http_and_https(base_url):
    Provider(name="p", base_url=base_url).full_clean()


def test_provider_base_url_trailing_slash_is_stripped_on_save():
    provider = Provider.objects.create(name="p", base_url="https://api.example.test/v1//")

    provider.refresh_from_db()
    assert provider.base_url == "https://api.example.test/v1"


@pytest.mark.parametrize("api_key_env", ["OPENAI_API_KEY", "HF_TOKEN", "my_API_KEY", ""])
def test_provider_api_key_env_accepts_variable_names_and_empty(api_key_env):
    Provider(name="p", base_url="https://x.test/v1", api_key_env=api_key_env).full_clean()


@pytest.mark.parametrize("api_key_env", ["my key", "1ABC", "OPENAI-API-KEY", "sk-abc123", "$OPENAI_API_KEY"])
def test_provider_api_key_env_rejects_non_variable_names(api_key_env):
    errors = _errors(Provider(name="p", base_url="https://x.test/v1", api_key_env=api_key_env))

    assert list(errors) == ["api_key_env"]


def test_provider_api_key_is_set_follows_the_environment(monkeypatch):
    provider = Provider(name="p", base_url="https://x.test/v1", api_key_env="TEST_PROVIDER_API_KEY")

    monkeypatch.setenv("TEST_PROVIDER_API_KEY", "sk-test")
    assert provider.api_key_is_set is True

    monkeypatch.setenv("TEST_PROVIDER_API_KEY", "")
    assert provider.api_key_is_set is False

    monkeypatch.delenv("TEST_PROVIDER_API_KEY")
    assert provider.api_key_is_set is False


def test_provider_without_key_variable_counts_as_key_set(monkeypatch):
    monkeypatch.delenv("TEST_PROVIDER_API_KEY", raising=False)

    assert Provider(name="ollama", base_url="http://127.0.0.1:11434/v1", api_key_env="").api_key_is_set is True


@pytest.mark.parametrize("name", ["has space", "-leading-dash", "", "x" * 101, "émoji"])
def test_provider_name_is_validated(name):
    assert "name" in _errors(Provider(name=name, base_url="https://x.test/v1"))


def test_provider_timeouts_must_be_at_least_a_tenth_of_a_second():
    errors = _errors(Provider(name="p", base_url="https://x.test/v1", connect_timeout_s=0, read_timeout_s=0.05))

    assert set(errors) == {"connect_timeout_s", "read_timeout_s"}


def test_model_upstream_model_defaults_to_name():
    model = model_create(name="gpt-4o")

    model.refresh_from_db()
    assert model.upstream_model == "gpt-4o"


def test_model_upstream_model_kept_when_given():
    model = model_create(name="claude-sonnet-4", upstream_model="claude-sonnet-4-20250514")

    model.refresh_from_db()
    assert model.upstream_model == "claude-sonnet-4-20250514"


def test_model_name_colliding_with_a_route_is_rejected():
    provider = provider_create()
    route_create("coding", [model_create(name="gpt-4o", provider=provider)])

    errors = _errors(ModelEndpoint(name="coding", provider=provider))

    assert list(errors) == ["name"]
    assert "route" in errors["name"][0]


def test_route_name_colliding_with_a_model_is_rejected():
    model_create(name="gpt-4o")

    errors = _errors(Route(name="gpt-4o"))

    assert list(errors) == ["name"]
    assert "model" in errors["name"][0]


def test_model_and_route_with_distinct_names_are_valid():
    model = model_create(name="gpt-4o")
    ModelEndpoint(name="gpt-4o-mini", provider=model.provider).full_clean()
    Route(name="coding").full_clean()


def test_route_target_is_unique_per_route_and_model():
    model = model_create(name="gpt-4o")
    route = route_create("coding", [model])

    duplicate = RouteTarget(route=route, model=model, position=1)
    with pytest.raises(ValidationError):
        duplicate.full_clean()
    with pytest.raises(IntegrityError), transaction.atomic():
        duplicate.save()

    assert route.targets.count() == 1


def test_same_model_may_be_a_target_of_several_routes():
    model = model_create(name="gpt-4o")
    route_create("coding", [model])
    route_create("default", [model])

    assert RouteTarget.objects.filter(model=model).count() == 2


@pytest.mark.parametrize("field", ["input_per_mtok", "output_per_mtok", "cached_input_per_mtok"])
def test_price_set_rejects_negative_prices(field):
    model = model_create()
    values = {"input_per_mtok": Decimal("1"), "output_per_mtok": Decimal("2"), "cached_input_per_mtok": Decimal("0.5")}
    values[field] = Decimal("-0.01")

    with pytest.raises(ValidationError) as exc_info:
        price_set(model=model, **values)

    assert list(exc_info.value.message_dict) == [f"price.{field}"]
    assert not Price.objects.exists()


def test_price_set_rejects_more_than_six_decimal_places():
    model = model_create()

    with pytest.raises(ValidationError) as exc_info:
        price_set(model=model, input_per_mtok=Decimal("0.1234567"), output_per_mtok=Decimal("1"))

    assert list(exc_info.value.message_dict) == ["price.input_per_mtok"]
    assert not Price.objects.exists()


def test_price_set_accepts_zero_and_six_decimal_places():
    model = model_create()

    price = price_set(model=model, input_per_mtok=Decimal("0"), output_per_mtok=Decimal("0.123456"))

    price.refresh_from_db()
    assert (price.input_per_mtok, price.output_per_mtok, price.cached_input_per_mtok) == (
        Decimal("0"),
        Decimal("0.123456"),
        None,
    )
    assert price.source == Price.Source.MANUAL


def test_price_current_picks_the_price_in_force_at_a_given_time():
    model = model_create()
    now = timezone.now()
    old = price_set(
        model=model, input_per_mtok=Decimal("1"), output_per_mtok=Decimal("2"), effective_from=now - timedelta(days=10)
    )
    new = price_set(
        model=model, input_per_mtok=Decimal("3"), output_per_mtok=Decimal("4"), effective_from=now - timedelta(days=2)
    )

    assert price_current(model=model, at=now - timedelta(days=20)) is None
    assert price_current(model=model, at=now - timedelta(days=10)) == old
    assert price_current(model=model, at=now - timedelta(days=5)) == old
    assert price_current(model=model, at=now - timedelta(days=2)) == new
    assert price_current(model=model) == new
    assert model.prices.count() == 2


def test_price_current_ignores_future_prices_and_other_models():
    model, other = model_create(), model_create()
    now = timezone.now()
    current = price_set(
        model=model, input_per_mtok=Decimal("1"), output_per_mtok=Decimal("2"), effective_from=now - timedelta(days=1)
    )
    price_set(
        model=model, input_per_mtok=Decimal("9"), output_per_mtok=Decimal("9"), effective_from=now + timedelta(days=1)
    )
    price_set(model=other, input_per_mtok=Decimal("5"), output_per_mtok=Decimal("5"), effective_from=now)

    assert price_current(model=model) == current
    assert price_current(model=model_create()) is None
