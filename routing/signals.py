"""Any committed change to a registry table, or to a user (whose keys stop or start working with
`is_active`), tells every worker to reload its snapshot."""

from django.contrib.auth import get_user_model
from django.db import transaction
from django.db.models.signals import m2m_changed, post_delete, post_save

from billing.models import Budget, Price

from .models import ApiKey, ModelEndpoint, Provider, Route, RouteTarget
from .registry import registry_version_bump

REGISTRY_MODELS = (Provider, ModelEndpoint, Route, RouteTarget, ApiKey, Price, Budget)


def _on_registry_change(**kwargs) -> None:
    transaction.on_commit(registry_version_bump)


def _on_user_change(update_fields=None, **kwargs) -> None:
    if update_fields is not None and set(update_fields) == {"last_login"}:
        return  # a login, on every sign-in: changes nothing a key depends on
    transaction.on_commit(registry_version_bump)


def connect_registry_signals() -> None:
    user_model = get_user_model()
    post_save.connect(_on_user_change, sender=user_model, dispatch_uid="registry-save-user")
    post_delete.connect(_on_registry_change, sender=user_model, dispatch_uid="registry-delete-user")
    for model in REGISTRY_MODELS:
        post_save.connect(_on_registry_change, sender=model, dispatch_uid=f"registry-save-{model.__name__}")
        post_delete.connect(_on_registry_change, sender=model, dispatch_uid=f"registry-delete-{model.__name__}")
    for through in (ApiKey.allowed_models.through, ApiKey.allowed_routes.through):
        m2m_changed.connect(_on_registry_change, sender=through, dispatch_uid=f"registry-m2m-{through.__name__}")
