"""ASGI entry point: /v1/ goes to the lean API handler, /demo/v1/ to the offline demo provider when
ROUTERWEB_DEMO_PROVIDER is on, everything else (pages, admin, static files) to Django's full stack.

Lifespan: at start-up the call recorder replays spooled rows a previous process left, and the
registry watch starts (it reads the registry version once a second, routing/registry.py); at
shutdown the watch stops, the recorder flushes what is queued, the worker hands back its budget
allowances, and the upstream HTTP client and the database threads' connections are closed.
"""

import asyncio
import contextlib
import logging
import os

from django.conf import settings
from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "routerweb.settings")

django_application = get_asgi_application()

from billing.budgets import budget_upkeep  # noqa: E402  (needs Django set up)
from billing.recorder import call_recorder  # noqa: E402
from routerweb.db_executor import db_executor  # noqa: E402
from routing.asgi_api import ApiHandler  # noqa: E402
from routing.demo_provider import PREFIX as DEMO_PREFIX  # noqa: E402
from routing.demo_provider import DemoProvider  # noqa: E402
from routing.registry import registry_cache  # noqa: E402
from routing.upstream import upstream_transport_close  # noqa: E402

logger = logging.getLogger("routerweb")
api_application = ApiHandler()
demo_provider = DemoProvider()


async def application(scope, receive, send):
    if scope["type"] == "http":
        path = scope["path"]
        if path.startswith("/v1/"):
            return await api_application(scope, receive, send)
        if path.startswith(f"{DEMO_PREFIX}/") and settings.ROUTERWEB_DEMO_PROVIDER:
            return await demo_provider(scope, receive, send)
        return await django_application(scope, receive, send)
    if scope["type"] == "lifespan":
        return await _lifespan(receive, send)
    raise ValueError(f"unsupported ASGI scope type {scope['type']!r}")


async def _lifespan(receive, send) -> None:
    registry_watch = None
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            call_recorder().start()
            registry_watch = asyncio.create_task(registry_cache.watch(), name="registry-watch")
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            if registry_watch is not None:
                registry_watch.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await registry_watch
            await upstream_transport_close()
            call_recorder().stop()
            try:
                await db_executor.run(budget_upkeep.return_all)
            except Exception:  # the database is down: the allowances expire and are reclaimed
                logger.exception("could not hand back this worker's budget allowances")
            db_executor.close_connections()
            await send({"type": "lifespan.shutdown.complete"})
            return
