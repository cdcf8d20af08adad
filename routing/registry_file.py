"""The registry as a YAML file: validate, import (all or nothing, idempotent) and export.

Long: the file's whole contract (structure, references, apply, export) in one place, read top to bottom.

Import upserts the providers, models and routes named in the file; a route's targets become exactly
the file's list. Entries the database has and the file does not are left alone, and so are the
fields an entry leaves out (a new entry gets their defaults), so importing the same file twice, or a
partial entry, changes nothing it does not name.

The rules a registry must follow are the models' own (`full_clean`, routing/models.py) plus
`route_targets_errors` (routing/registry_rules.py): the admin applies the same ones.

Another app can own a key of the model entries (billing owns `price`): it registers a
`ModelFileExtension` (`model_extension_register`), which validates, applies and exports that key.
"""

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

import yaml
from django.core.exceptions import ValidationError
from django.db import transaction

from .models import ModelEndpoint, Provider, Route, RouteTarget
from .rate_limits_file import rate_limits_apply, rate_limits_errors, rate_limits_export
from .registry_rules import route_kinds_error, route_targets_error, validate_weight
from .registry_version import registry_version_bump

PROVIDER_KEYS = {"name", "api_format", "base_url", "api_key_env", "timeout_s", "connect_timeout_s", "enabled"}
MODEL_KEYS = {"name", "provider", "kind", "upstream_model", "context_window", "max_output_tokens", "enabled"}
ROUTE_KEYS = {"name", "strategy", "description", "targets", "cache_ttl_s", "cache_shared"}
TARGET_KEYS = {"model", "weight"}
TOP_KEYS = {"providers", "models", "routes", "rate_limits"}


class ModelFileExtension(ABC):
    """One key of the model entries that another app owns (e.g. billing's `price`)."""

    key: str

    @abstractmethod
    def errors(self, where: str, value: Any) -> list[str]:
        """What is wrong with the key's value (not None) in the entry at `where`; [] when it is fine."""

    @abstractmethod
    def apply(self, model: ModelEndpoint, value: Any) -> bool:
        """Make `model` match the checked value (inside the import's transaction); True when that changed
        something. Raises ValidationError to refuse it (the whole import is then undone)."""

    @abstractmethod
    def export(self, model: ModelEndpoint) -> Any:
        """The key's value for `model` in an exported file, or None to leave the key out."""


_model_extensions: dict[str, ModelFileExtension] = {}


def model_extension_register(extension: ModelFileExtension) -> None:
    _model_extensions[extension.key] = extension


class RegistryFileError(Exception):
    """The file is invalid; `errors` names each bad entry and field. Nothing was applied."""

    def __init__(self, errors: list[str]):
        self.errors = errors
        super().__init__("; ".join(errors))


@dataclass
class ImportSummary:
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.created or self.updated)


def registry_file_parse(text: str) -> dict[str, Any]:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise RegistryFileError([f"not valid YAML: {exc}"]) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise RegistryFileError(["the file must be a mapping with keys providers, models, routes"])
    return data


def registry_import(*, data: dict[str, Any]) -> ImportSummary:
    """Validate `data` completely, then apply it in one transaction; raises RegistryFileError."""
    _validate_structure(data)
    summary = ImportSummary()
    try:
        with transaction.atomic():
            providers = {p["name"]: _provider_upsert(p, summary) for p in data.get("providers") or []}
            for entry in data.get("models") or []:
                _model_upsert(entry, providers, summary)
            for entry in data.get("routes") or []:
                _route_upsert(entry, summary)
            summary.updated += rate_limits_apply(data.get("rate_limits"))
    except _EntryError as exc:
        raise RegistryFileError([str(exc)]) from None
    return summary


def registry_export() -> dict[str, Any]:
    """The whole registry as plain data, in the import format (stable order, so files diff cleanly)."""
    providers = [_provider_export(p) for p in Provider.objects.order_by("name")]
    models = [_model_export(m) for m in ModelEndpoint.objects.select_related("provider").order_by("name")]
    routes = [_route_export(r) for r in Route.objects.prefetch_related("targets__model").order_by("name")]
    limits = rate_limits_export()
    return {"providers": providers, "models": models, "routes": routes, **({"rate_limits": limits} if limits else {})}


def registry_file_render(data: dict[str, Any]) -> str:
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True, default_flow_style=False)


# ---------------------------------------------------------------------------- validation


def _validate_structure(data: dict[str, Any]) -> None:
    errors: list[str] = []
    for key in sorted(set(data) - TOP_KEYS):
        errors.append(f"unknown top-level key {key!r} (expected providers, models, routes, rate_limits)")
    errors += rate_limits_errors(data.get("rate_limits"))
    for section, keys, required in (
        ("providers", PROVIDER_KEYS, ("name", "base_url")),
        ("models", MODEL_KEYS | set(_model_extensions), ("name", "provider")),
        ("routes", ROUTE_KEYS, ("name", "targets")),
    ):
        entries = data.get(section) or []
        if not isinstance(entries, list):
            errors.append(f"{section}: must be a list")
            continue
        seen: set[str] = set()
        for index, entry in enumerate(entries):
            errors += _entry_errors(section, index, entry, keys, required, seen)
    if not errors:
        errors += _reference_errors(data)
    if errors:
        raise RegistryFileError(errors)


def _entry_errors(section, index, entry, keys, required, seen) -> list[str]:
    where = f"{section}[{index}]"
    if not isinstance(entry, dict):
        return [f"{where}: must be a mapping"]
    where = f"{where} ({entry.get('name', '?')})"
    errors = [f"{where}: unknown key {k!r}" for k in sorted(set(entry) - keys)]
    errors += [f"{where}: missing field {k!r}" for k in required if entry.get(k) in (None, "")]
    for key in ("name", "provider"):
        if key in keys and entry.get(key) is not None and not isinstance(entry[key], str):
            errors.append(f"{where}: {key} must be a string, got {entry[key]!r}")
    name = entry.get("name")
    if isinstance(name, str):
        if name in seen:
            errors.append(f"{where}: duplicate name {name!r}")
        seen.add(name)
    if section == "models":
        for key, extension in _model_extensions.items():
            if entry.get(key) is not None:
                errors += extension.errors(where, entry[key])
    if section == "routes":
        errors += _targets_errors(where, entry.get("targets"), entry.get("strategy", Route.Strategy.ORDERED))
    if entry.get("cache_ttl_s") is not None and not (
        isinstance(entry["cache_ttl_s"], int)
        and not isinstance(entry["cache_ttl_s"], bool)
        and entry["cache_ttl_s"] > 0
    ):
        errors.append(f"{where}: cache_ttl_s must be a positive integer (seconds) or null")
    if "cache_shared" in entry and not isinstance(entry["cache_shared"], bool):
        errors.append(f"{where}: cache_shared must be true or false")
    for number_key in ("timeout_s", "connect_timeout_s", "context_window", "max_output_tokens"):
        if number_key in entry and not _is_positive_number(entry[number_key]):
            errors.append(f"{where}: {number_key} must be a positive number")
    if "enabled" in entry and not isinstance(entry["enabled"], bool):
        errors.append(f"{where}: enabled must be true or false")
    if section == "models" and "kind" in entry and entry["kind"] not in ModelEndpoint.Kind.values:
        errors.append(f"{where}: kind must be one of {', '.join(ModelEndpoint.Kind.values)}, got {entry['kind']!r}")
    return errors


def _targets_errors(where: str, targets: Any, strategy: Any) -> list[str]:
    if strategy not in Route.Strategy.values:
        return [f"{where}: strategy must be one of {', '.join(Route.Strategy.values)}, got {strategy!r}"]
    if not isinstance(targets, list):
        return [f"{where}: targets must be a list"]
    problem = route_targets_error(len(targets))
    if problem:
        return [f"{where}: targets: {problem}"]
    errors = []
    for i, target in enumerate(targets):
        if not isinstance(target, dict) or not isinstance(target.get("model"), str):
            errors.append(f"{where}: targets[{i}] must be a mapping with a model name")
            continue
        errors += [f"{where}: targets[{i}]: unknown key {k!r}" for k in sorted(set(target) - TARGET_KEYS)]
        try:
            validate_weight(target.get("weight", 1))
        except ValidationError as exc:
            errors.append(f"{where}: targets[{i}].weight: {' '.join(exc.messages)}")
    return errors


def _reference_errors(data: dict[str, Any]) -> list[str]:
    """Names that must resolve: a model's provider, a route's target models, and no model/route name clash."""
    providers = {p["name"] for p in data.get("providers") or []}
    providers |= set(Provider.objects.values_list("name", flat=True))
    models = {m["name"] for m in data.get("models") or []}
    models |= set(ModelEndpoint.objects.values_list("name", flat=True))
    routes = {r["name"] for r in data.get("routes") or []}
    kinds = dict(ModelEndpoint.objects.values_list("name", "kind"))
    kinds |= {m["name"]: m.get("kind", kinds.get(m["name"], ModelEndpoint.Kind.CHAT)) for m in data.get("models") or []}
    errors = []
    for i, model in enumerate(data.get("models") or []):
        if model["provider"] not in providers:
            errors.append(f"models[{i}] ({model['name']}): provider {model['provider']!r} is not defined")
    for i, route in enumerate(data.get("routes") or []):
        for j, target in enumerate(route["targets"]):
            if target["model"] not in models:
                errors.append(f"routes[{i}] ({route['name']}): targets[{j}].model {target['model']!r} is not a model")
        problem = route_kinds_error((t["model"], kinds[t["model"]]) for t in route["targets"] if t["model"] in kinds)
        if problem:
            errors.append(f"routes[{i}] ({route['name']}): targets: {problem}")
    file_models = {m["name"] for m in data.get("models") or []}
    db_routes = set(Route.objects.values_list("name", flat=True))
    for name in sorted((models & routes) | (file_models & db_routes)):
        errors.append(f"name {name!r} is used by both a model and a route")
    return errors


def _is_positive_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0


def decimal_or_none(value: Any) -> Decimal | None:
    if isinstance(value, bool):
        return None
    try:
        number = Decimal(str(value))
    except (InvalidOperation, ValueError):
        return None
    return number if number.is_finite() else None


# ---------------------------------------------------------------------------- apply


class _EntryError(Exception):
    pass


def _messages(exc: ValidationError) -> str:
    return "; ".join(f"{f}: {' '.join(m)}" for f, m in exc.message_dict.items())


def _save(obj, where: str, summary: ImportSummary, label: str, created: bool) -> None:
    try:
        obj.full_clean(validate_unique=False)
    except ValidationError as exc:
        raise _EntryError(f"{where}: {_messages(exc)}") from None
    obj.save()
    (summary.created if created else summary.updated).append(label)


def _upsert(model_cls, name: str, values: dict[str, Any], where: str, summary: ImportSummary, kind: str):
    """Create or update the entry `name`; `values` holds only the fields the file gives."""
    obj = model_cls.objects.filter(name=name).first()
    created = obj is None
    if created:
        obj = model_cls(name=name)
    changed = created or any(getattr(obj, k) != v for k, v in values.items())
    for key, value in values.items():
        setattr(obj, key, value)
    if changed:
        _save(obj, where, summary, f"{kind} {name}", created)
    return obj


def _given(entry: dict[str, Any], fields: dict[str, tuple[str, Any]]) -> dict[str, Any]:
    """The model fields an entry gives: `fields` maps a file key to (model field, conversion)."""
    return {name: convert(entry[key]) for key, (name, convert) in fields.items() if key in entry}


PROVIDER_FIELDS = {
    "api_format": ("api_format", lambda v: v or "openai"),
    "base_url": ("base_url", lambda v: str(v).rstrip("/")),
    "api_key_env": ("api_key_env", lambda v: v or ""),
    "timeout_s": ("read_timeout_s", float),
    "connect_timeout_s": ("connect_timeout_s", float),
    "enabled": ("enabled", bool),
}
MODEL_FIELDS = {
    "kind": ("kind", str),
    "upstream_model": ("upstream_model", lambda v: v or ""),
    "context_window": ("context_window", lambda v: v),
    "max_output_tokens": ("max_output_tokens", lambda v: v),
    "enabled": ("enabled", bool),
}


def _provider_upsert(entry: dict[str, Any], summary: ImportSummary) -> Provider:
    values = _given(entry, PROVIDER_FIELDS)
    return _upsert(Provider, entry["name"], values, f"providers ({entry['name']})", summary, "provider")


def _model_upsert(entry: dict[str, Any], providers: dict[str, Provider], summary: ImportSummary) -> None:
    provider = providers.get(entry["provider"]) or Provider.objects.get(name=entry["provider"])
    values = {"provider": provider, **_given(entry, MODEL_FIELDS)}
    if values.get("upstream_model") == "":
        values["upstream_model"] = entry["name"]
    where = f"models ({entry['name']})"
    model = _upsert(ModelEndpoint, entry["name"], values, where, summary, "model")
    created = f"model {model.name}" in summary.created
    for key, extension in _model_extensions.items():
        if entry.get(key) is None:
            continue
        try:
            changed = extension.apply(model, entry[key])
        except ValidationError as exc:
            raise _EntryError(f"{where}: {_messages(exc)}") from None
        if changed and not created:  # a new model's price is part of its creation
            summary.updated.append(f"{key} {model.name}")


def _route_upsert(entry: dict[str, Any], summary: ImportSummary) -> None:
    values = _given(
        entry,
        {
            "strategy": ("strategy", str),
            "description": ("description", lambda v: v or ""),
            "cache_ttl_s": ("cache_ttl_s", lambda v: v),
            "cache_shared": ("cache_shared", bool),
        },
    )
    route = _upsert(Route, entry["name"], values, f"routes ({entry['name']})", summary, "route")
    wanted = [(t["model"], t.get("weight", 1)) for t in entry["targets"]]
    existing = [(t.model.name, t.weight) for t in route.targets.select_related("model").order_by("position", "id")]
    if wanted == existing:
        return
    route.targets.all().delete()
    by_name = {m.name: m for m in ModelEndpoint.objects.filter(name__in=[n for n, _ in wanted])}
    RouteTarget.objects.bulk_create(
        RouteTarget(route=route, model=by_name[name], position=i, weight=weight)
        for i, (name, weight) in enumerate(wanted)
    )
    registry_version_bump()  # bulk_create sends no signals
    if f"route {route.name}" not in summary.created:
        summary.updated.append(f"route {route.name} targets")


# ---------------------------------------------------------------------------- export


def _provider_export(provider: Provider) -> dict[str, Any]:
    data: dict[str, Any] = {"name": provider.name}
    if provider.api_format != "openai":
        data["api_format"] = provider.api_format
    data["base_url"] = provider.base_url
    if provider.api_key_env:
        data["api_key_env"] = provider.api_key_env
    data["timeout_s"] = provider.read_timeout_s
    data["connect_timeout_s"] = provider.connect_timeout_s
    if not provider.enabled:
        data["enabled"] = False
    return data


def _model_export(model: ModelEndpoint) -> dict[str, Any]:
    data: dict[str, Any] = {"name": model.name, "provider": model.provider.name}
    if model.kind != ModelEndpoint.Kind.CHAT:
        data["kind"] = model.kind
    if model.upstream_model != model.name:
        data["upstream_model"] = model.upstream_model
    for key in ("context_window", "max_output_tokens"):
        if getattr(model, key) is not None:
            data[key] = getattr(model, key)
    if not model.enabled:
        data["enabled"] = False
    for key, extension in _model_extensions.items():
        value = extension.export(model)
        if value is not None:
            data[key] = value
    return data


def _route_export(route: Route) -> dict[str, Any]:
    data: dict[str, Any] = {"name": route.name, "strategy": route.strategy}
    if route.description:
        data["description"] = route.description
    if route.cache_ttl_s:
        data["cache_ttl_s"] = route.cache_ttl_s
    if route.cache_shared:
        data["cache_shared"] = True
    targets = sorted(route.targets.all(), key=lambda t: (t.position, t.id))
    weighted = route.strategy == Route.Strategy.WEIGHTED
    data["targets"] = [{"model": t.model.name, **({"weight": t.weight} if weighted else {})} for t in targets]
    return data


def plain_number(value: Decimal) -> int | float | str:
    """A YAML-friendly number that reads back as the same Decimal (floats only when they round-trip)."""
    normalized = value.normalize()
    if normalized == normalized.to_integral_value():
        return int(normalized)
    as_float = float(normalized)
    return as_float if Decimal(str(as_float)) == normalized else str(normalized)
