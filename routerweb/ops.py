"""Operations endpoints: `/healthz` (the process answers), `/readyz` (it can serve: database, Redis
when configured, the meter's parts) and `/metrics` (Prometheus, routing/metrics.py).

None of them writes a row. `/metrics` answers a bearer token equal to `ROUTERWEB_METRICS_TOKEN` or a
staff session; otherwise 404 when no token is configured (the endpoint is off), 401 when one is.
"""

import asyncio
import secrets
import time

from django.conf import settings
from django.core.cache import cache
from django.db import connection
from django.http import Http404, HttpResponse, JsonResponse

from routing.metrics import CONTENT_TYPE
from routing.runtime import runtime_of

from .db_executor import db_executor

READY_CHECK_TIMEOUT_S = 2.0


async def healthz(request) -> HttpResponse:
    return JsonResponse({"status": "ok"})


async def readyz(request) -> JsonResponse:
    runtime = runtime_of(request)
    checks = {"database": await _checked(_database_ping)}
    if settings.REDIS_URL:
        checks["redis"] = await _checked(_redis_ping)
    checks.update(runtime.meter.ready())
    ready = all(checks.values())
    body = {"status": "ready" if ready else "not ready", "checks": checks, "calls_in_flight": runtime.calls_in_flight}
    return JsonResponse(body, status=200 if ready else 503)


async def metrics(request) -> HttpResponse:
    if not await _metrics_allowed(request):
        if not settings.ROUTERWEB_METRICS_TOKEN:
            raise Http404
        response = HttpResponse("A bearer token or a staff login is required.\n", status=401, content_type="text/plain")
        response["WWW-Authenticate"] = "Bearer"
        return response
    runtime = runtime_of(request)
    runtime.metrics.flush()  # this worker's counts are current; the others flush once a second
    registry = await runtime.registry.get()
    models = list(registry.models.values())
    views = await runtime.breaker.read(models) if models else {}
    now = time.time()
    circuits = {name: bool(view.open_until and view.open_until > now) for name, view in views.items()}
    try:
        shared = await asyncio.wait_for(db_executor.run(runtime.meter.shared_gauges), READY_CHECK_TIMEOUT_S)
    except Exception:
        shared = {}  # the database is down: the per-worker values still go out
    body = runtime.metrics.scrape_text(shared=shared, circuits=circuits)
    return HttpResponse(body, content_type=CONTENT_TYPE)


async def _metrics_allowed(request) -> bool:
    token = settings.ROUTERWEB_METRICS_TOKEN
    header = request.headers.get("Authorization", "")
    if token and header.startswith("Bearer ") and secrets.compare_digest(header[7:].encode(), token.encode()):
        return True
    if not hasattr(request, "auser"):
        return False
    user = await request.auser()
    return bool(user.is_active and user.is_staff)


async def _checked(check) -> bool:
    try:
        await asyncio.wait_for(db_executor.run(check), READY_CHECK_TIMEOUT_S)
    except Exception:
        return False
    return True


def _database_ping() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")


def _redis_ping() -> None:
    cache.get("readyz-ping")
