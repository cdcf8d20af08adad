"""The registry's version: a counter in the database, and a token in the shared state for instant news.

- The truth is `RegistryVersion.counter` (one row). `registry_version_bump()` raises it inside the
  transaction that changes the registry, so the change and the new version commit together: any
  process that uses the ORM (the admin, `import_registry`, `sync_prices`, `seed_demo`, a script,
  another machine) bumps it through the signals of routing/signals.py. Code that writes registry
  tables without signals (`bulk_create`, `update()`) calls it explicitly.
- Each worker reads the counter at most once a second (`RegistryCache.watch`) and reloads its
  snapshot when it differs from the snapshot's version: every change is in force everywhere
  within about a second, with or without Redis.
- After the commit, the bump also publishes a new token under `VERSION_KEY` in the shared state,
  which the hot path reads with the circuit state: workers sharing Redis (or the process that made
  the change) reload at once. Losing that token (Redis down) only delays a change to the next read
  of the counter.
"""

import logging
import uuid

from django.db import connection, transaction

from .models import RegistryVersion
from .shared_state import shared_state

VERSION_KEY = "registry:version"

logger = logging.getLogger("routerweb.registry")


def registry_version_read() -> str:
    """The committed registry version ("0" before the first change)."""
    counter = RegistryVersion.objects.filter(pk=1).values_list("counter", flat=True).first()
    return str(counter or 0)


def registry_version_bump() -> None:
    """Raise the version in the current transaction (or at once, in autocommit) and announce it after commit.

    Concurrent bumps serialize on the version row until their transactions end.
    """
    table = connection.ops.quote_name(RegistryVersion._meta.db_table)
    # An upsert: the row may be missing (a fresh or flushed database). Portable (PostgreSQL, SQLite 3.24+).
    sql = (
        f"INSERT INTO {table} (id, counter) VALUES (1, 1) ON CONFLICT (id) DO UPDATE SET counter = {table}.counter + 1"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql)
    transaction.on_commit(registry_version_announce)


def registry_version_announce() -> None:
    """Publish a new token in the shared state: the workers that read it reload their snapshot now."""
    shared_state().set_sync(VERSION_KEY, uuid.uuid4().hex)
