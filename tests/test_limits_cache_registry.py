"""Rate limits and the response cache in the registry: YAML import/export, the admin, the snapshot."""

import pytest
from django.contrib.auth import get_user_model

from routing.models import ApiKey, Route, UserRateLimit
from routing.registry import registry_load
from routing.registry_file import RegistryFileError, registry_export, registry_import
from routing.services import api_key_create, route_cache_clear
from tests.factories import model_create, provider_create, route_create


@pytest.fixture
def world(transactional_db):
    provider = provider_create(name="p", base_url="http://127.0.0.1:9/v1")
    model_create(name="m", provider=provider)
    alice = get_user_model().objects.create_user("alice")
    key, _ = api_key_create(user=alice, name="k")
    return alice, key


def test_yaml_import_export_round_trip(world):
    alice, key = world
    data = {
        "routes": [{"name": "faq", "targets": [{"model": "m"}], "cache_ttl_s": 600, "cache_shared": True}],
        "rate_limits": {
            "users": [{"user": "alice", "requests_per_minute": 60, "tokens_per_minute": 1000}],
            "keys": [{"key": key.prefix, "requests_per_minute": 5}],
        },
    }
    summary = registry_import(data=data)
    assert "rate limits of user alice" in summary.updated
    route = Route.objects.get(name="faq")
    assert (route.cache_ttl_s, route.cache_shared) == (600, True)
    assert (UserRateLimit.objects.get(user=alice).rpm_limit, ApiKey.objects.get(pk=key.pk).rpm_limit) == (60, 5)
    exported = registry_export()
    assert exported["rate_limits"] == data["rate_limits"]
    assert {k: v for k, v in exported["routes"][0].items() if k.startswith("cache")} == {
        "cache_ttl_s": 600,
        "cache_shared": True,
    }
    assert not registry_import(data=exported).changed  # idempotent


@pytest.mark.parametrize(
    "section, error",
    [
        ({"users": [{"user": "nobody", "requests_per_minute": 1}]}, "no user 'nobody'"),
        ({"users": [{"user": "alice", "requests_per_minute": 0}]}, "positive integer"),
        ({"keys": [{"key": "rw-nope"}]}, "no API key 'rw-nope'"),
        ({"groups": []}, "users and/or keys"),
    ],
)
def test_yaml_refuses_bad_limits(world, section, error):
    with pytest.raises(RegistryFileError) as refused:
        registry_import(data={"rate_limits": section})
    assert error in str(refused.value)


def test_snapshot_holds_limits_and_cache_settings(world):
    alice, key = world
    ApiKey.objects.filter(pk=key.pk).update(rpm_limit=7, tpm_limit=70)
    UserRateLimit.objects.create(user=alice, tpm_limit=500)
    route = route_create("faq", ["m"])
    route.cache_ttl_s, route.cache_shared = 60, True
    route.save()
    route_cache_clear(route=route)
    registry = registry_load()
    snap = registry.keys_by_hash[key.key_hash]
    assert (snap.rpm_limit, snap.tpm_limit) == (7, 70)
    assert registry.user_limits == {alice.id: (None, 500)}
    faq = registry.routes["faq"]
    assert (faq.cache_ttl_s, faq.cache_shared, faq.cache_generation) == (60, True, 1)


def test_admin_clear_action_and_limit_fields(world, admin_client):
    route = route_create("faq", ["m"])
    response = admin_client.post(
        "/admin/routing/route/", {"action": "clear_cache", "_selected_action": [route.pk]}, follow=True
    )
    assert response.status_code == 200
    assert Route.objects.get(pk=route.pk).cache_generation == 1
    alice, key = world
    page = admin_client.get(f"/admin/routing/apikey/{key.pk}/change/")
    assert b"requests per minute" in page.content.lower()
    assert admin_client.get("/admin/routing/userratelimit/add/").status_code == 200
