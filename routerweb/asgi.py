"""ASGI entry point: /v1/ goes to the lean API handler, /demo/v1/ to the offline demo provider when
ROUTERWEB_DEMO_PROVIDER is on, everything else (pages, admin, static files) to Django's full stack.

Lifespan: at start-up the worker's runtime is built (routing/runtime.py), handed to every request
through the lifespan state, and started: its meter (billing's replays the rows a previous process
spooled) and its registry watch; then the garbage collector is set for serving
(routerweb/collector.py). At shutdown the watch stops, the upstream HTTP client closes, the meter
stops (billing's stores what is queued and hands back the worker's budget allowances) and the
database threads' connections close. Before that, on SIGTERM, uvicorn stops accepting and lets open
connections finish (`--timeout-graceful-shutdown`, routerweb/serve.py), and the lifespan waits for the
calls in flight to be recorded, at most ROUTERWEB_SHUTDOWN_GRACE_S.
"""

import logging
import os

from django.conf import settings
from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "routerweb.settings")

django_application = get_asgi_application()

from routerweb.collector import collector_set_for_serving  # noqa: E402
from routerweb.db_executor import db_executor  # noqa: E402  (needs Django set up)
from routing.asgi_api import ApiHandler  # noqa: E402
from routing.demo_provider import PREFIX as DEMO_PREFIX  # noqa: E402
from routing.demo_provider import DemoProvider  # noqa: E402
from routing.runtime import (  # noqa: E402
    runtime_build,
    runtime_calls_drained,
    runtime_install,
    runtime_start,
    runtime_stop,
)
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
        return await _lifespan(scope, receive, send)
    raise ValueError(f"unsupported ASGI scope type {scope['type']!r}")


async def _lifespan(scope, receive, send) -> None:
    runtime = None
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            runtime = runtime_build()
            runtime_install(runtime)  # for requests served without lifespan state
            scope.setdefault("state", {})["runtime"] = runtime  # copied into every request's scope
            runtime_start(runtime)
            collector_set_for_serving()
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            if runtime is not None:
                # The server accepts nothing new by now; calls still in flight (a stream's last bytes,
                # a row being recorded) finish before the meter stores the rows and hands back budgets.
                if not await runtime_calls_drained(runtime, grace_s=settings.ROUTERWEB_SHUTDOWN_GRACE_S):
                    logger.warning("%d calls still in flight at shutdown", runtime.calls_in_flight)
                await runtime_stop(runtime)
            await upstream_transport_close()
            if runtime is not None:
                await db_executor.run(runtime.meter.stop)
            db_executor.close_connections()
            await send({"type": "lifespan.shutdown.complete"})
            return
