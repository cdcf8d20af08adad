"""Writes on the registry that are more than a plain save: API keys."""

import hashlib
import secrets

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import F
from django.utils import timezone

from .models import API_KEY_PREFIX, ApiKey, Route
from .registry_version import registry_version_bump


def api_key_hash(raw_key: str) -> str:
    return hashlib.sha256(raw_key.encode()).hexdigest()


def api_key_create(
    *, user: AbstractBaseUser, name: str = "default", reads_dashboard: bool = False
) -> tuple[ApiKey, str]:
    """Create a key for `user`; returns the row and the raw key, which is never stored and cannot be shown again.

    `reads_dashboard` is the read scope: without it the key works on /v1 only.
    """
    raw_key = API_KEY_PREFIX + secrets.token_urlsafe(32)
    key = ApiKey.objects.create(
        user=user, name=name, prefix=raw_key[:10], key_hash=api_key_hash(raw_key), reads_dashboard=reads_dashboard
    )
    return key, raw_key


def api_key_revoke(*, key: ApiKey) -> None:
    if key.revoked_at is None:
        key.revoked_at = timezone.now()
        key.save(update_fields=["revoked_at"])


def route_cache_clear(*, route: Route) -> None:
    """Forget the route's cached answers: its cache generation moves on, so no old key is read again
    (in force on every worker within a second, as any registry change; old entries expire by TTL)."""
    Route.objects.filter(pk=route.pk).update(cache_generation=F("cache_generation") + 1)
    registry_version_bump()
