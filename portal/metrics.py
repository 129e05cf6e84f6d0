"""Prometheus metrics: HTTP by route, reconciler lag and restarts, chat streams; the names other code increments."""

from __future__ import annotations

import datetime as dt
import hmac
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any

from asgiref.sync import iscoroutinefunction
from django.conf import settings
from django.http import HttpRequest, HttpResponse
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest

from portal.middleware import HybridMiddleware

logger = logging.getLogger(__name__)
access_log = logging.getLogger("portal.access")

# -- HTTP (web process) -------------------------------------------------------------------------
# Labels are the URL pattern's name, never the raw path, so that ids in URLs cannot explode the series.
HTTP_REQUESTS = Counter(
    "kaito_portal_http_requests_total", "HTTP requests answered, by route name, method and status.",
    ["route", "method", "status"],
)  # fmt: skip
HTTP_LATENCY = Histogram(
    "kaito_portal_http_request_duration_seconds",
    "Time until the response object was ready (a streamed body continues after this), by route name.",
    ["route", "method"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)

# -- chat (web process; workspaces/consumers.py and the OpenAI-compatible view call these) ---------
CHAT_STREAMS_OPEN = Gauge("kaito_portal_chat_streams_open", "Chat answers being streamed from a model right now.")
CHAT_UPSTREAM_ERRORS = Counter(
    "kaito_portal_chat_upstream_errors_total", "Model server failures, by workspaces.chat.ChatError.kind.", ["kind"]
)

# -- reconciler (its own process, served by `manage.py reconcile --metrics-port`) -----------------
RECONCILE_LAG = Histogram(
    "kaito_portal_reconcile_lag_seconds",
    "From a Workspace condition's lastTransitionTime to the portal having processed the watch event carrying it.",
    buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600),
)
RECONCILE_PASSES = Counter(
    "kaito_portal_reconcile_passes_total", "Reconciler passes by kind: resync, event, error.", ["kind"]
)
WATCH_RESTARTS = Counter(
    "kaito_portal_reconcile_watch_restarts_total", "Watches restarted after 410 Gone or an error (relist)."
)
RECONCILER_LEADER = Gauge("kaito_portal_reconciler_leader", "1 while this reconciler holds the Lease, else 0.")
UPSTREAM_ERROR_KINDS = frozenset(
    {"timeout", "unreachable", "stream_cut", "upstream_error", "bad_response", "not_ready", "not_found", "other"}
)


def chat_stream_opened() -> None:
    """Call when a chat answer starts streaming from the model (pair with chat_stream_closed)."""
    CHAT_STREAMS_OPEN.inc()


def chat_stream_closed() -> None:
    """Call when that stream ended for any reason: done, error, client gone, cancelled."""
    CHAT_STREAMS_OPEN.dec()


@contextmanager
def chat_stream() -> Iterator[None]:
    """`with metrics.chat_stream():` around the streaming loop; the gauge goes down even on cancellation."""
    chat_stream_opened()
    try:
        yield
    finally:
        chat_stream_closed()


def upstream_error(kind: str) -> None:
    """Count one model server failure; pass ChatError.kind (unknown kinds count as "other")."""
    CHAT_UPSTREAM_ERRORS.labels(kind if kind in UPSTREAM_ERROR_KINDS else "other").inc()


# -- reconciler hooks (wired up by workspaces/management/commands/reconcile.py) ------------------------
def _newest_transition(cr: dict[str, Any]) -> dt.datetime | None:
    newest = None
    for condition in (cr.get("status") or {}).get("conditions") or []:
        raw = condition.get("lastTransitionTime")
        try:
            when = dt.datetime.fromisoformat(str(raw).replace("Z", "+00:00"))
        except ValueError:
            continue
        if when.tzinfo is not None and (newest is None or when > newest):
            newest = when
    return newest


def measure_handle(handle: Callable[[str, dict[str, Any]], None]) -> Callable[[str, dict[str, Any]], None]:
    """Wrap Reconciler.handle: observe the lag once per new condition transition (not on every event)."""
    seen: dict[tuple[str, str], dt.datetime] = {}

    def handled(kind: str, cr: dict[str, Any]) -> None:
        handle(kind, cr)
        meta = cr.get("metadata") or {}
        key = (meta.get("namespace", ""), meta.get("name", ""))
        if kind == "DELETED":
            seen.pop(key, None)
            return
        newest = _newest_transition(cr)
        if newest is None or seen.get(key) == newest:
            return
        first_sight = key not in seen
        seen[key] = newest
        if not first_sight:  # the first event after start-up may carry an old transition: not a lag
            RECONCILE_LAG.observe(max(0.0, (dt.datetime.now(dt.UTC) - newest).total_seconds()))

    return handled


def reconciler_on_pass(reconciler: Any) -> Callable[[str], None]:
    """An on_pass hook that counts passes and turns Reconciler.watch_restarts into a counter."""
    counted = {"restarts": 0}

    def on_pass(what: str) -> None:
        RECONCILE_PASSES.labels(what).inc()
        restarts = reconciler.watch_restarts
        if restarts > counted["restarts"]:
            WATCH_RESTARTS.inc(restarts - counted["restarts"])
            counted["restarts"] = restarts

    return on_pass


def track_leadership(is_leader: Callable[[], bool]) -> None:
    RECONCILER_LEADER.set_function(lambda: 1.0 if is_leader() else 0.0)


def serve(port: int, address: str) -> None:
    """Expose this process's metrics on address:port (the reconciler; the web process uses /metrics)."""
    from prometheus_client import start_http_server

    start_http_server(port, addr=address)
    logger.info("metrics on http://%s:%s/metrics", address, port)


# -- /metrics and the request middleware -----------------------------------------------------------
def metrics_view(request: HttpRequest) -> HttpResponse:
    """The web process's metrics; with PORTAL_METRICS_TOKEN set, only for `Authorization: Bearer <token>`."""
    token = getattr(settings, "METRICS_TOKEN", "")
    if token:
        given = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        if not hmac.compare_digest(given.encode(), token.encode()):
            return HttpResponse("metrics need the bearer token\n", status=401, content_type="text/plain")
    return HttpResponse(generate_latest(), content_type=CONTENT_TYPE_LATEST)


METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})  # anything else: "other"
QUIET_ROUTES = frozenset({"healthz", "readyz", "metrics"})  # probes and scrapes: counted, not access-logged


class MetricsMiddleware(HybridMiddleware):
    """Counts and times every request by route name; logs one access line (no query string: it may hold secrets)."""

    def __call__(self, request: HttpRequest) -> HttpResponse | Awaitable[HttpResponse]:
        if iscoroutinefunction(self):
            return self._acall(request)
        started = time.perf_counter()
        response = self.get_response(request)
        self._record(request, response, started)
        return response

    async def _acall(self, request: HttpRequest) -> HttpResponse:
        started = time.perf_counter()
        response = await self.get_response(request)
        self._record(request, response, started)
        return response

    @staticmethod
    def _record(request: HttpRequest, response: HttpResponse, started: float) -> None:
        elapsed = time.perf_counter() - started
        match = getattr(request, "resolver_match", None)
        route = (match.view_name if match else None) or getattr(request, "probe_route", None) or "unmatched"
        method = request.method if request.method in METHODS else "other"
        HTTP_REQUESTS.labels(route, method, str(response.status_code)).inc()
        HTTP_LATENCY.labels(route, method).observe(elapsed)
        if route not in QUIET_ROUTES:
            access_log.info(
                "%s %s %s",
                request.method,
                request.path,
                response.status_code,
                extra={"route": route, "status": response.status_code, "duration_ms": round(elapsed * 1000, 1)},
            )
