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

# Through the admin's own forms (a logged-in client posting the change pages): a target removed from
# route coding and a provider's timeout changed; then a model disabled and a price changed.
EDIT = """
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import reverse
from billing.services import price_set
from routing.models import ModelEndpoint, Provider, Route
admin = Client(HTTP_HOST="127.0.0.1")
admin.force_login(get_user_model().objects.get(username="admin"))
coding = Route.objects.get(name="coding")
targets = list(coding.targets.all())
data = {"name": coding.name, "strategy": coding.strategy, "description": coding.description,
        "targets-TOTAL_FORMS": len(targets), "targets-INITIAL_FORMS": len(targets),
        "targets-MIN_NUM_FORMS": 0, "targets-MAX_NUM_FORMS": 1000}
for i, t in enumerate(targets):
    data |= {f"targets-{i}-id": t.pk, f"targets-{i}-route": coding.pk, f"targets-{i}-position": t.position,
             f"targets-{i}-model": t.model_id, f"targets-{i}-weight": t.weight}
    if t.model.name == "gpt-4o":
        data[f"targets-{i}-DELETE"] = "on"
response = admin.post(reverse("admin:routing_route_change", args=[coding.pk]), data)
assert response.status_code == 302, response.content
openai = Provider.objects.get(name="openai")
response = admin.post(reverse("admin:routing_provider_change", args=[openai.pk]), {
    "name": "openai", "api_format": "openai", "base_url": openai.base_url, "api_key_env": openai.api_key_env,
    "connect_timeout_s": openai.connect_timeout_s, "read_timeout_s": 12, "enabled": "on"})
assert response.status_code == 302, response.content
model = ModelEndpoint.objects.get(name="deepseek-chat")
model.enabled = False
model.save()
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
