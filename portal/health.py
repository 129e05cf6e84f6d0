"""/healthz (the process answers) and /readyz (database, channel layer, cluster), reachable without login."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import async_to_sync, iscoroutinefunction, sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings
from django.contrib.auth.decorators import login_not_required
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.http import HttpRequest, HttpResponse, JsonResponse

from portal.middleware import HybridMiddleware

logger = logging.getLogger(__name__)
CHECK_TIMEOUT = 3.0  # seconds per dependency; below the chart's probe timeout, so a hung check still answers


@login_not_required
def healthz(request: HttpRequest) -> HttpResponse:
    """Liveness: the process serves requests. Deliberately checks no dependency (a DB outage must not restart pods)."""
    return JsonResponse({"status": "ok"})


_migrated = threading.Event()  # once the schema is current it stays so for this code version


def _database() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()
    if not _migrated.is_set():
        # Not ready before the migrate Job finished: the code would fail on missing tables.
        executor = MigrationExecutor(connection)
        plan = executor.migration_plan(executor.loader.graph.leaf_nodes())
        if plan:
            raise RuntimeError(f"{len(plan)} migrations are not applied yet (manage.py migrate)")
        _migrated.set()
    return connection.vendor


def _database_closing() -> str:
    try:
        return _database()
    finally:
        connection.close()  # a thread of the pool must not keep a connection per probe


async def _channels() -> str:
    layer = get_channel_layer()
    if layer is None:
        raise RuntimeError("no channel layer is configured")
    channel = await layer.new_channel("readyz.")
    await layer.send(channel, {"type": "readyz.ping"})
    message = await layer.receive(channel)
    if message.get("type") != "readyz.ping":
        raise RuntimeError(f"the channel layer returned {message!r}")
    return type(layer).__name__


def _cluster() -> str:
    from workspaces.services.clusters import get_cluster

    return get_cluster().ping()


CHECKS: dict[str, Callable[[], Awaitable[str]]] = {
    "database": sync_to_async(_database_closing, thread_sensitive=False),
    "channels": _channels,
    "cluster": sync_to_async(_cluster, thread_sensitive=False),
}


def _reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return f"no answer within {CHECK_TIMEOUT:.0f} s"
    message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    return message.splitlines()[0][:300]  # enough to act on; no stack, no connection strings


async def _run(name: str) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        detail = await asyncio.wait_for(CHECKS[name](), CHECK_TIMEOUT)
        result: dict[str, Any] = {"ok": True, "detail": detail}
    except Exception as exc:  # every failure is a "not ready" answer, never a 500
        result = {"ok": False, "error": _reason(exc)}
    result["ms"] = round((time.perf_counter() - started) * 1000, 1)
    return result


@login_not_required
async def readyz(request: HttpRequest) -> HttpResponse:
    """200 when every required dependency answers; 503 naming the ones that failed. All are checked and reported."""
    names = list(CHECKS)
    results = dict(zip(names, await asyncio.gather(*(_run(n) for n in names)), strict=True))
    required = [n for n in settings.READYZ_REQUIRED if n in CHECKS]
    for name in names:
        results[name]["required"] = name in required
    failed = [n for n in required if not results[n]["ok"]]
    if failed:
        logger.warning("not ready: %s", ", ".join(f"{n} ({results[n]['error']})" for n in failed))
    body = {"status": "unavailable" if failed else "ok", "failed": failed, "checks": results}
    return JsonResponse(body, status=503 if failed else 200)


class ProbeMiddleware(HybridMiddleware):
    """Answers /healthz, /readyz and /metrics before host validation and the HTTPS redirect.

    Kubelet probes and Prometheus scrapes reach the pod by IP over plain HTTP, so the Host header is not
    in ALLOWED_HOSTS and the request is not secure. None of these answers depends on the host.
    """

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        from portal.metrics import metrics_view

        super().__init__(get_response)
        self.routes: dict[str, Callable[[HttpRequest], Any]] = {
            "/healthz": healthz,
            "/readyz": readyz,
            "/metrics": metrics_view,
        }

    def __call__(self, request: HttpRequest) -> HttpResponse | Awaitable[HttpResponse]:
        view = self.routes.get(request.path.rstrip("/"))
        if iscoroutinefunction(self):
            return self._acall(request, view)
        if view is None:
            return self.get_response(request)
        request.probe_route = request.path.strip("/")
        return async_to_sync(view)(request) if iscoroutinefunction(view) else view(request)

    async def _acall(self, request: HttpRequest, view: Callable[[HttpRequest], Any] | None) -> HttpResponse:
        if view is None:
            return await self.get_response(request)
        request.probe_route = request.path.strip("/")
        if iscoroutinefunction(view):
            return await view(request)
        return await sync_to_async(view, thread_sensitive=False)(request)
