"""An install seeded before the demo provider's address became a path gets the path at migrate."""

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

BEFORE = [("routing", "0005_registry_version")]


@pytest.mark.django_db(transaction=True)
def test_the_old_loopback_demo_address_becomes_the_path():
    executor = MigrationExecutor(connection)
    executor.migrate(BEFORE)
    Provider = executor.loader.project_state(BEFORE).apps.get_model("routing", "Provider")
    Provider.objects.create(name="demo", base_url="http://127.0.0.1:8000/demo/v1")
    Provider.objects.create(name="elsewhere", base_url="https://gateway.example.test/demo/v1")

    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())

    from routing.models import Provider as CurrentProvider

    urls = dict(CurrentProvider.objects.values_list("name", "base_url"))
    assert urls == {"demo": "/demo/v1", "elsewhere": "https://gateway.example.test/demo/v1"}
