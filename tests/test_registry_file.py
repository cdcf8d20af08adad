"""The registry YAML file through the import_registry, export_registry and seed_demo management commands."""

from __future__ import annotations

import io
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml
from django.apps import apps
from django.core.management import CommandError, call_command

from billing.models import Price
from billing.services import price_current
from routing.management.commands import seed_demo
from routing.models import ModelEndpoint, Provider, Route
from tests.factories import model_create, provider_create, route_create

pytestmark = pytest.mark.django_db

EXAMPLE = """\
providers:
  - name: openai
    base_url: https://api.openai.com/v1
    api_key_env: OPENAI_API_KEY
    timeout_s: 30
models:
  - name: gpt-4o
    provider: openai
    upstream_model: gpt-4o
    price: {input_per_mtok: 2.50, output_per_mtok: 10.00, cached_input_per_mtok: 1.25}
  - name: deepseek-chat
    provider: openai
routes:
  - name: coding
    strategy: ordered
    targets:
      - {model: deepseek-chat}
      - {model: gpt-4o}
  - name: ab-test
    strategy: weighted
    targets:
      - {model: gpt-4o, weight: 80}
      - {model: deepseek-chat, weight: 20}
"""


def example() -> dict[str, Any]:
    return yaml.safe_load(EXAMPLE)


def write(tmp_path: Path, content: str | dict[str, Any], name: str = "registry.yaml") -> Path:
    path = tmp_path / name
    path.write_text(content if isinstance(content, str) else yaml.safe_dump(content, sort_keys=False), encoding="utf-8")
    return path


def import_file(path: Path) -> str:
    out = io.StringIO()
    call_command("import_registry", str(path), stdout=out)
    return out.getvalue()


def export_text() -> str:
    out = io.StringIO()
    call_command("export_registry", stdout=out)
    return out.getvalue()


def row_counts() -> dict[str, int]:
    models = [*apps.get_app_config("routing").get_models(), *apps.get_app_config("billing").get_models()]
    return {m._meta.label: m.objects.count() for m in models}


def updated_at_values() -> dict[str, Any]:
    return {
        f"{m._meta.label}:{pk}": updated_at
        for m in (Provider, ModelEndpoint, Route)
        for pk, updated_at in m.objects.values_list("pk", "updated_at")
    }


def test_example_file_imports(tmp_path):
    output = import_file(write(tmp_path, EXAMPLE))

    assert "created provider openai" in output
    openai = Provider.objects.get()
    assert (openai.name, openai.base_url, openai.api_key_env, openai.read_timeout_s) == (
        "openai",
        "https://api.openai.com/v1",
        "OPENAI_API_KEY",
        30.0,
    )
    assert openai.connect_timeout_s == 5.0 and openai.enabled
    gpt, deepseek = ModelEndpoint.objects.get(name="gpt-4o"), ModelEndpoint.objects.get(name="deepseek-chat")
    assert gpt.provider == deepseek.provider == openai
    assert deepseek.upstream_model == "deepseek-chat"
    price = price_current(model=gpt)
    assert (price.input_per_mtok, price.output_per_mtok, price.cached_input_per_mtok) == (
        Decimal("2.5"),
        Decimal("10"),
        Decimal("1.25"),
    )
    assert price_current(model=deepseek) is None
    coding, ab_test = Route.objects.get(name="coding"), Route.objects.get(name="ab-test")
    assert coding.strategy == Route.Strategy.ORDERED
    assert [(t.model.name, t.position) for t in coding.targets.all()] == [("deepseek-chat", 0), ("gpt-4o", 1)]
    assert ab_test.strategy == Route.Strategy.WEIGHTED
    assert [(t.model.name, t.weight) for t in ab_test.targets.all()] == [("gpt-4o", 80), ("deepseek-chat", 20)]


def test_importing_the_same_file_twice_changes_nothing(tmp_path):
    path = write(tmp_path, EXAMPLE)
    import_file(path)
    counts, updated = row_counts(), updated_at_values()
    targets = list(Route.objects.get(name="coding").targets.values_list("pk", flat=True))

    output = import_file(path)

    assert output.strip() == f"{path}: the registry already matches; nothing changed."
    assert row_counts() == counts
    assert updated_at_values() == updated
    assert list(Route.objects.get(name="coding").targets.values_list("pk", flat=True)) == targets


@pytest.mark.django_db(transaction=True)
def test_export_flush_import_export_round_trip_is_byte_identical(tmp_path):
    call_command("seed_demo", stdout=io.StringIO())
    route_create("ab-test", ["gpt-4o", "deepseek-chat"], strategy=Route.Strategy.WEIGHTED, weights=[80, 20])
    provider_create(name="offline", base_url="https://offline.test/v1", enabled=False, read_timeout_s=12.5)
    model_create(name="tiny", provider=Provider.objects.get(name="offline"), price=("0.000001", "123456.123456"))
    path = tmp_path / "export.yaml"
    call_command("export_registry", str(path))
    first = path.read_bytes()

    call_command("flush", interactive=False, verbosity=0)
    assert not Provider.objects.exists() and not Price.objects.exists()
    import_file(path)

    assert export_text().encode() == first
    assert Route.objects.count() == 4
    assert not Provider.objects.get(name="offline").enabled


def test_export_registry_to_a_file_and_to_stdout(tmp_path):
    import_file(write(tmp_path, EXAMPLE))
    path = tmp_path / "out" / "export.yaml"
    path.parent.mkdir()
    out = io.StringIO()

    call_command("export_registry", str(path), stdout=out)

    assert out.getvalue() == ""
    assert path.read_text(encoding="utf-8") == export_text()
    data = yaml.safe_load(export_text())
    assert [p["name"] for p in data["providers"]] == ["openai"]
    assert [m["name"] for m in data["models"]] == ["deepseek-chat", "gpt-4o"]
    assert data["routes"] == [
        {
            "name": "ab-test",
            "strategy": "weighted",
            "targets": [{"model": "gpt-4o", "weight": 80}, {"model": "deepseek-chat", "weight": 20}],
        },
        {"name": "coding", "strategy": "ordered", "targets": [{"model": "deepseek-chat"}, {"model": "gpt-4o"}]},
    ]


def test_export_never_contains_key_values(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-canary-1234567890")
    import_file(write(tmp_path, EXAMPLE))

    text = export_text()

    assert "api_key_env: OPENAI_API_KEY" in text
    assert "sk-canary" not in text


def test_price_change_adds_a_new_price_row_and_keeps_history(tmp_path):
    import_file(write(tmp_path, EXAMPLE))
    gpt = ModelEndpoint.objects.get(name="gpt-4o")
    old = price_current(model=gpt)
    old_values = (old.input_per_mtok, old.output_per_mtok, old.cached_input_per_mtok, old.effective_from)
    data = example()
    data["models"][0]["price"] = {"input_per_mtok": 3, "output_per_mtok": 12}

    output = import_file(write(tmp_path, data, "changed.yaml"))

    assert "updated price gpt-4o" in output
    assert gpt.prices.count() == 2
    old.refresh_from_db()
    assert (old.input_per_mtok, old.output_per_mtok, old.cached_input_per_mtok, old.effective_from) == old_values
    new = price_current(model=gpt)
    assert new.pk != old.pk
    assert (new.input_per_mtok, new.output_per_mtok, new.cached_input_per_mtok) == (Decimal("3"), Decimal("12"), None)
    assert new.effective_from > old.effective_from


def test_import_replaces_route_targets_and_leaves_other_entries_alone(tmp_path):
    other = model_create(name="local-llama")
    import_file(write(tmp_path, EXAMPLE))
    data = {"routes": [{"name": "coding", "targets": [{"model": "gpt-4o"}, {"model": "local-llama"}]}]}

    output = import_file(write(tmp_path, data, "routes.yaml"))

    assert "updated route coding targets" in output
    coding = Route.objects.get(name="coding")
    assert [t.model.name for t in coding.targets.all()] == ["gpt-4o", "local-llama"]
    assert Route.objects.filter(name="ab-test").exists()
    assert ModelEndpoint.objects.filter(name="deepseek-chat").exists()
    assert ModelEndpoint.objects.get(pk=other.pk).provider == other.provider


def test_import_updates_changed_fields(tmp_path):
    import_file(write(tmp_path, EXAMPLE))
    data = example()
    data["providers"][0].update(base_url="https://proxy.example.test/openai/v1/", timeout_s=90, enabled=False)

    output = import_file(write(tmp_path, data, "changed.yaml"))

    assert "updated provider openai" in output
    openai = Provider.objects.get(name="openai")
    assert (openai.base_url, openai.read_timeout_s, openai.enabled) == (
        "https://proxy.example.test/openai/v1",
        90,
        False,
    )


def test_a_partial_model_or_provider_entry_keeps_the_fields_it_leaves_out(tmp_path):
    data = example()
    data["models"][0].update(context_window=128000, max_output_tokens=16384, enabled=False)
    data["providers"][0].update(connect_timeout_s=2, enabled=False)
    import_file(write(tmp_path, data))
    partial = {
        "providers": [{"name": "openai", "base_url": "https://api.openai.com/v1"}],
        "models": [{"name": "gpt-4o", "provider": "openai", "upstream_model": "gpt-4o-2024-08-06"}],
    }

    output = import_file(write(tmp_path, partial, "partial.yaml"))

    assert output.strip() == "updated model gpt-4o"
    gpt = ModelEndpoint.objects.get(name="gpt-4o")
    assert (gpt.upstream_model, gpt.context_window, gpt.max_output_tokens, gpt.enabled) == (
        "gpt-4o-2024-08-06",
        128000,
        16384,
        False,
    )
    openai = Provider.objects.get(name="openai")
    assert (openai.api_key_env, openai.read_timeout_s, openai.connect_timeout_s, openai.enabled) == (
        "OPENAI_API_KEY",
        30,
        2,
        False,
    )


def test_a_new_model_with_a_price_is_reported_created_only(tmp_path):
    output = import_file(write(tmp_path, EXAMPLE))

    assert "created model gpt-4o" in output
    assert "price" not in output
    assert "updated" not in output


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    """A mutation that sets `value` at a dotted path such as "models.0.price.input_per_mtok"."""

    def mutate(data: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = data
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        if isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value

    return mutate


def _delete(path: str) -> Callable[[dict[str, Any]], None]:
    def mutate(data: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = data
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        del node[last]

    return mutate


def _append(section: str, entry: dict[str, Any]) -> Callable[[dict[str, Any]], None]:
    return lambda data: data[section].append(entry)


INVALID_CHANGES = {
    "NaN price": (_set("models.0.price.input_per_mtok", float("nan")), ["models[0] (gpt-4o)", "price.input_per_mtok"]),
    "infinite price": (_set("models.0.price.output_per_mtok", float("inf")), ["price.output_per_mtok"]),
    "name not a string": (_set("providers.0.name", ["p"]), ["providers[0]", "name must be a string"]),
    "provider reference not a string": (_set("models.0.provider", {"p": 1}), ["provider must be a string"]),
    "target model not a string": (_set("routes.0.targets.0.model", ["m"]), ["targets[0] must be a mapping"]),
    "unknown top-level key": (_set("servers", []), ["unknown top-level key 'servers'"]),
    "unknown provider key": (_set("providers.0.api_key", "sk-x"), ["providers[0] (openai)", "unknown key 'api_key'"]),
    "unknown model key": (_set("models.0.cost", 1), ["models[0] (gpt-4o)", "unknown key 'cost'"]),
    "unknown route key": (_set("routes.0.fallback", True), ["routes[0] (coding)", "unknown key 'fallback'"]),
    "unknown target key": (
        _set("routes.0.targets.0.priority", 1),
        ["routes[0] (coding)", "targets[0]", "unknown key 'priority'"],
    ),
    "unknown price key": (
        _set("models.0.price.per_request", 1),
        ["models[0] (gpt-4o)", "price", "unknown key 'per_request'"],
    ),
    "provider without base_url": (
        _delete("providers.0.base_url"),
        ["providers[0] (openai)", "missing field 'base_url'"],
    ),
    "model without provider": (_delete("models.1.provider"), ["models[1] (deepseek-chat)", "missing field 'provider'"]),
    "route without targets": (_delete("routes.0.targets"), ["routes[0] (coding)", "missing field 'targets'"]),
    "route with empty targets": (
        _set("routes.0.targets", []),
        ["routes[0] (coding)", "A route needs at least one target"],
    ),
    "price without output_per_mtok": (
        _delete("models.0.price.output_per_mtok"),
        ["models[0] (gpt-4o)", "price", "missing field 'output_per_mtok'"],
    ),
    "route naming an unknown model": (
        _set("routes.0.targets.1.model", "gpt-5"),
        ["routes[0] (coding)", "targets[1].model 'gpt-5' is not a model"],
    ),
    "model naming an unknown provider": (
        _set("models.0.provider", "openia"),
        ["models[0] (gpt-4o)", "provider 'openia' is not defined"],
    ),
    "ftp base_url": (_set("providers.0.base_url", "ftp://x"), ["openai", "base_url", "http:// or https://"]),
    "negative price": (_set("models.0.price.input_per_mtok", -1), ["models[0] (gpt-4o)", "price.input_per_mtok", "-1"]),
    "non-number price": (
        _set("models.0.price.output_per_mtok", "abc"),
        ["models[0] (gpt-4o)", "price.output_per_mtok", "'abc'"],
    ),
    "weight of 0": (_set("routes.1.targets.0.weight", 0), ["routes[1] (ab-test)", "targets[0].weight", "got 0"]),
    "non-integer weight": (_set("routes.1.targets.0.weight", 1.5), ["routes[1] (ab-test)", "targets[0].weight"]),
    "unknown strategy": (_set("routes.0.strategy", "random"), ["routes[0] (coding)", "strategy", "'random'"]),
    "negative timeout": (_set("providers.0.timeout_s", -5), ["providers[0] (openai)", "timeout_s"]),
    "enabled not a boolean": (_set("models.0.enabled", "yes"), ["models[0] (gpt-4o)", "enabled"]),
    "duplicate provider name": (
        _append("providers", {"name": "openai", "base_url": "https://other.test/v1"}),
        ["providers[1] (openai)", "duplicate name 'openai'"],
    ),
    "duplicate model name": (
        _append("models", {"name": "gpt-4o", "provider": "openai"}),
        ["models[2] (gpt-4o)", "duplicate name 'gpt-4o'"],
    ),
    "duplicate route name": (
        _append("routes", {"name": "coding", "targets": [{"model": "gpt-4o"}]}),
        ["routes[2] (coding)", "duplicate name 'coding'"],
    ),
    "model and route with the same name": (
        _append("routes", {"name": "gpt-4o", "targets": [{"model": "deepseek-chat"}]}),
        ["name 'gpt-4o' is used by both a model and a route"],
    ),
    "late: route with an invalid name after valid providers and models": (
        _append("routes", {"name": "bad route!", "targets": [{"model": "gpt-4o"}]}),
        ["routes (bad route!)", "name"],
    ),
    "late: provider timeout below the minimum": (
        _set("providers.0.timeout_s", 0.01),
        ["providers (openai)", "read_timeout_s"],
    ),
    "base_url ending in /chat/completions": (
        _set("providers.0.base_url", "https://api.openai.com/v1/chat/completions"),
        ["providers (openai)", "base_url", "without /chat/completions"],
    ),
    "provider names differing only in case": (
        _append("providers", {"name": "OpenAI", "base_url": "https://other.test/v1"}),
        ["providers (OpenAI)", "already named 'openai'", "only in case"],
    ),
    "cached input price above the input price": (
        _set("models.0.price", {"input_per_mtok": 1, "output_per_mtok": 2, "cached_input_per_mtok": 1.5}),
        ["models[0] (gpt-4o)", "price.cached_input_per_mtok", "above the input price"],
    ),
    "late: price with seven decimal places on the last model": (
        _set("models.1.price", {"input_per_mtok": 0.1234567, "output_per_mtok": 1}),
        ["models (deepseek-chat)", "price.input_per_mtok"],
    ),
}


@pytest.fixture
def existing_registry() -> dict[str, Any]:
    """Rows already in the database, so that "nothing applied" also means "nothing existing was touched"."""
    model = model_create(name="local-llama", provider=provider_create(name="ollama"), price=("0", "0"))
    route_create("local", [model])
    return {"counts": row_counts(), "updated_at": updated_at_values(), "export": export_text()}


def assert_nothing_applied(before: dict[str, Any]) -> None:
    assert row_counts() == before["counts"]
    assert updated_at_values() == before["updated_at"]
    assert export_text() == before["export"]


@pytest.mark.parametrize("case", INVALID_CHANGES)
def test_invalid_file_is_refused_with_a_precise_error_and_nothing_applied(case, tmp_path, existing_registry):
    mutate, expected = INVALID_CHANGES[case]
    data = example()
    mutate(data)
    path = write(tmp_path, data)

    with pytest.raises(CommandError) as exc_info:
        import_file(path)

    message = str(exc_info.value)
    assert message.startswith(f"{path}: nothing was imported:")
    for part in expected:
        assert part in message
    assert_nothing_applied(existing_registry)


def test_late_error_rolls_back_rows_already_written_in_the_same_import(tmp_path, existing_registry):
    data = example()
    data["providers"].append({"name": "broken", "base_url": "ftp://x"})

    with pytest.raises(CommandError, match=r"providers \(broken\): base_url"):
        import_file(write(tmp_path, data))

    assert not Provider.objects.filter(name="openai").exists()
    assert_nothing_applied(existing_registry)


def test_model_clashing_with_a_route_in_the_database_is_refused(tmp_path, existing_registry):
    data = {"models": [{"name": "local", "provider": "ollama"}]}

    with pytest.raises(CommandError, match="name 'local' is used by both a model and a route"):
        import_file(write(tmp_path, data))

    assert_nothing_applied(existing_registry)


def test_file_may_reference_providers_and_models_already_in_the_database(tmp_path, existing_registry):
    data = {
        "models": [{"name": "llama-big", "provider": "ollama"}],
        "routes": [{"name": "local-2", "targets": [{"model": "local-llama"}, {"model": "llama-big"}]}],
    }

    import_file(write(tmp_path, data))

    assert ModelEndpoint.objects.get(name="llama-big").provider.name == "ollama"
    assert [t.model.name for t in Route.objects.get(name="local-2").targets.all()] == ["local-llama", "llama-big"]


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("providers:\n  - name: openai\n    base_url: [unclosed\n", "not valid YAML"),
        ("- openai\n- anthropic\n", "must be a mapping"),
        ("just a string\n", "must be a mapping"),
        ("providers: {name: openai}\n", "providers: must be a list"),
        ("providers:\n  - openai\n", "providers[0]: must be a mapping"),
    ],
)
def test_unparseable_or_malformed_file_is_refused(content, expected, tmp_path, existing_registry):
    path = write(tmp_path, content)

    with pytest.raises(CommandError) as exc_info:
        import_file(path)

    assert expected in str(exc_info.value)
    assert_nothing_applied(existing_registry)


def test_every_error_in_a_file_is_reported_at_once(tmp_path, existing_registry):
    data = example()
    data["providers"][0]["colour"] = "blue"
    data["models"][0]["price"]["input_per_mtok"] = -1
    data["routes"][1]["targets"][0]["weight"] = 0

    with pytest.raises(CommandError) as exc_info:
        import_file(write(tmp_path, data))

    message = str(exc_info.value)
    assert "unknown key 'colour'" in message
    assert "price.input_per_mtok" in message
    assert "targets[0].weight" in message
    assert_nothing_applied(existing_registry)


def test_missing_file_is_refused(tmp_path, existing_registry):
    path = tmp_path / "missing.yaml"

    with pytest.raises(CommandError, match="cannot read .*missing.yaml: No such file or directory"):
        import_file(path)

    assert_nothing_applied(existing_registry)


def test_empty_file_imports_nothing(tmp_path, existing_registry):
    output = import_file(write(tmp_path, ""))

    assert "nothing changed" in output
    assert_nothing_applied(existing_registry)


def test_seed_demo_creates_the_demo_registry_and_is_idempotent(settings):
    settings.ROUTERWEB_PUBLIC_URL = "http://gateway.test:9000/"
    out = io.StringIO()
    call_command("seed_demo", stdout=out)
    demo = yaml.safe_load(seed_demo.DEMO_REGISTRY.read_text(encoding="utf-8"))
    created = len(demo["providers"]) + len(demo["models"]) + len(demo["routes"])
    assert out.getvalue().strip() == f"demo registry: {created} created, 0 updated"
    counts, updated, exported = row_counts(), updated_at_values(), export_text()

    out = io.StringIO()
    call_command("seed_demo", stdout=out)

    assert out.getvalue().strip().startswith("demo registry: 0 created, 0 updated")
    assert row_counts() == counts
    assert updated_at_values() == updated
    assert export_text() == exported
    assert set(Provider.objects.values_list("name", flat=True)) == {
        "openai",
        "anthropic",
        "deepseek",
        "dashscope",
        "ollama",
        "demo",
    }
    # A path: routerweb itself, at the address each call comes in on, whatever ROUTERWEB_PUBLIC_URL says.
    assert Provider.objects.get(name="demo").base_url == "/demo/v1"
    for name in ("default", "coding", "cheap"):
        targets = [t.model.name for t in Route.objects.get(name=name).targets.all()]
        assert len(targets) >= 3
        assert targets[-1] == "demo-echo"
    assert all(price_current(model=m) is not None for m in ModelEndpoint.objects.all())


def test_seed_demo_export_matches_the_bundled_demo_file():
    demo = yaml.safe_load(seed_demo.DEMO_REGISTRY.read_text(encoding="utf-8"))
    call_command("seed_demo", stdout=io.StringIO())

    exported = yaml.safe_load(export_text())

    def prices(data):
        return {m["name"]: {k: Decimal(str(v)) for k, v in m["price"].items()} for m in data["models"]}

    def targets(data):
        return {r["name"]: [t["model"] for t in r["targets"]] for r in data["routes"]}

    assert prices(exported) == prices(demo)
    assert targets(exported) == targets(demo)
