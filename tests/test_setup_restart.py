"""`make run`'s setup, run twice around an admin edit, against a database of its own: the edit survives.

The steps are read from the Makefile's `setup` recipe (every `$(PY) manage.py ...` line except
collectstatic, which touches no data) and run as subprocesses, as `make run` runs them.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

EDIT = """
from billing.services import price_set
from routing.models import ModelEndpoint, Provider, Route
coding = Route.objects.get(name="coding")
coding.targets.get(model__name="gpt-4o").delete()
model = ModelEndpoint.objects.get(name="deepseek-chat")
model.enabled = False
model.save()
provider = Provider.objects.get(name="openai")
provider.read_timeout_s = 12
provider.save()
price_set(model=ModelEndpoint.objects.get(name="gpt-4o-mini"), input_per_mtok=1, output_per_mtok=2)
"""

STATE = """
from billing.services import price_current
from routing.models import ModelEndpoint, Provider, Route
print([t.model.name for t in Route.objects.get(name="coding").targets.all()])
print(ModelEndpoint.objects.get(name="deepseek-chat").enabled)
print(Provider.objects.get(name="openai").read_timeout_s)
print(price_current(model=ModelEndpoint.objects.get(name="gpt-4o-mini")).input_per_mtok)
"""


def setup_steps() -> list[list[str]]:
    recipe = (ROOT / "Makefile").read_text().split("\nsetup:", 1)[1].split("\n\n", 1)[0]
    steps = [line.split("manage.py", 1)[1].split() for line in recipe.splitlines() if "$(PY) manage.py" in line]
    steps = [step for step in steps if step[0] != "collectstatic"]
    assert [step[0] for step in steps] == ["migrate", "seed_demo", "ensure_admin"]
    return steps


@pytest.fixture
def manage(tmp_path):
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
        "SECRET_KEY": "restart-test",
        "ROUTERWEB_ADMIN_PASSWORD": "restart-test-password",
        "CACHE_KEY_PREFIX": f"restart-{tmp_path.name}",
    }
    env.pop("REDIS_URL", None)

    def run(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    return run


def run_setup(manage) -> str:
    return "".join(manage(*step) for step in setup_steps())


def test_a_second_setup_keeps_the_admin_edits(manage):
    first = run_setup(manage)
    created = re.search(r"demo registry: (\d+) created, (\d+) updated", first)
    assert created and int(created[1]) > 0 and created[2] == "0", first
    manage("shell", "-c", EDIT)
    edited = manage("shell", "-c", STATE)

    second = run_setup(manage)

    assert "demo registry: 0 created, 0 updated" in second
    assert manage("shell", "-c", STATE) == edited
    targets, enabled, timeout, price = edited.strip().splitlines()[-4:]
    assert "'gpt-4o'" not in targets and "'demo-echo'" in targets
    assert (enabled, timeout, price) == ("False", "12.0", "1.000000")
