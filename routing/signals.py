"""Any change to a registry table, or to a user (whose keys stop or start working with `is_active`),
bumps the registry version.

The bump runs inside the transaction that makes the change (routing/registry_version.py), so every
process that writes through the ORM keeps the version true without knowing about it.
"""

from django.contrib.auth import get_user_model
from django.db.models import Model
from django.db.models.signals import m2m_changed, post_delete, post_save

from .models import ApiKey, ModelEndpoint, Provider, Route, RouteTarget, UserRateLimit
from .registry_version import registry_version_bump

REGISTRY_MODELS = (Provider, ModelEndpoint, Route, RouteTarget, ApiKey, UserRateLimit)
# Saves of a user that change nothing the registry holds: a login stamps `last_login`.
USER_FIELDS_OUTSIDE_REGISTRY = frozenset({"last_login"})


def _on_registry_change(**kwargs) -> None:
    registry_version_bump()


def _on_user_save(update_fields: frozenset[str] | None = None, **kwargs) -> None:
    if update_fields is None or not update_fields <= USER_FIELDS_OUTSIDE_REGISTRY:
        registry_version_bump()


def registry_models_connect(*models: type[Model]) -> None:
    """Make every change to `models` a registry change: routing's own, and those another app adds to
    the snapshot (the metering backend's part: billing's prices and budgets)."""
    for model in models:
        post_save.connect(_on_registry_change, sender=model, dispatch_uid=f"registry-save-{model.__name__}")
        post_delete.connect(_on_registry_change, sender=model, dispatch_uid=f"registry-delete-{model.__name__}")


def connect_registry_signals() -> None:
    registry_models_connect(*REGISTRY_MODELS)
    for through in (ApiKey.allowed_models.through, ApiKey.allowed_routes.through):
        m2m_changed.connect(_on_registry_change, sender=through, dispatch_uid=f"registry-m2m-{through.__name__}")
    user_model = get_user_model()
    post_save.connect(_on_user_save, sender=user_model, dispatch_uid="registry-save-user")
    post_delete.connect(_on_registry_change, sender=user_model, dispatch_uid="registry-delete-user")
