"""ASGI entry point: /v1/ goes to the lean API handler, /demo/v1/ to the offline demo provider when
ROUTERWEB_DEMO_PROVIDER is on, everything else (pages, admin, static files) to Django's full stack.

Lifespan: at start-up the meter starts (billing's replays the rows a previous process spooled) and
the registry watch starts (it reads the registry version once a second, routing/registry.py); at
shutdown the watch stops, the upstream HTTP client closes, the meter stops (billing's stores what is
queued and hands back the worker's budget allowances) and the database threads' connections close.
"""

import asyncio
import contextlib
import logging
import os

from django.conf import settings
from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "routerweb.settings")

django_application = get_asgi_application()

from routerweb.db_executor import db_executor  # noqa: E402  (needs Django set up)
from routing.asgi_api import ApiHandler  # noqa: E402
from routing.demo_provider import PREFIX as DEMO_PREFIX  # noqa: E402
from routing.demo_provider import DemoProvider  # noqa: E402
from routing.metering import meter  # noqa: E402
from routing.registry import registry_cache  # noqa: E402
from routing.upstream import serving_address, upstream_transport_close  # noqa: E402

logger = logging.getLogger("routerweb")
api_application = ApiHandler()
demo_provider = DemoProvider()


async def application(scope, receive, send):
    if scope["type"] == "http":
        serving_address.set(scope.get("server"))
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
            meter().start()
            registry_watch = asyncio.create_task(registry_cache.watch(), name="registry-watch")
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            if registry_watch is not None:
                registry_watch.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await registry_watch
            await upstream_transport_close()
            await db_executor.run(meter().stop)
            db_executor.close_connections()
            await send({"type": "lifespan.shutdown.complete"})
            return
