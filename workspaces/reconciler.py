"""The control loop: list, then watch the managed Workspaces; resync, expire, apply and delete level-based."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from django.db import close_old_connections
from django.utils import timezone

from workspaces.cluster import Cluster, ClusterError, WatchExpired
from workspaces.kaito.status import observed_state
from workspaces.leader import LeaderElector
from workspaces.models import Status, WorkspaceRequest
from workspaces.services import workspace as ws
from workspaces.services.preview import request_manifests

logger = logging.getLogger(__name__)
FINAL = {Status.REJECTED, Status.WITHDRAWN, Status.DELETED}
EXPLAIN = {Status.PROVISIONING, Status.FAILED, Status.RUNNING}  # statuses whose sentence uses Events
WATCH_WINDOW = 15  # seconds; bounds how long a shutdown or a lost lease can go unnoticed


class Shutdown(Exception):
    """Raised into a blocked watch when the process is asked to stop."""


def drifted(desired: Any, actual: Any) -> bool:
    """True when a field the portal sets differs in the live object (fields others set are ignored)."""
    if isinstance(desired, dict):
        return not isinstance(actual, dict) or any(drifted(v, actual.get(k)) for k, v in desired.items())
    if isinstance(desired, list):
        return not isinstance(actual, list) or len(desired) != len(actual) or any(map(drifted, desired, actual))
    return desired != actual


class Reconciler:
    def __init__(
        self,
        cluster: Cluster,
        *,
        elector: LeaderElector,
        resync_seconds: int = 60,
        watch_window: int = WATCH_WINDOW,
        on_pass: Callable[[str], None] | None = None,
    ) -> None:
        self.cluster = cluster
        self.elector = elector
        self.resync_seconds = resync_seconds
        self.watch_window = watch_window
        self.on_pass = on_pass or (lambda what: None)  # tests and metrics hook: "resync", "event", "error"
        self.stopping = threading.Event()
        self.in_watch = False
        self.resource_version = ""
        self.watch_restarts = 0
        self.strangers: set[tuple[str, str]] = set()  # labelled objects without a request, warned about once

    # -- one level-based pass over everything ----------------------------------------------------
    def resync(self) -> str:
        """Bring the database and the cluster into agreement; returns the list's resourceVersion."""
        listed_at = timezone.now()
        items, version = self.cluster.list_workspaces()
        live = {(cr["metadata"]["namespace"], cr["metadata"]["name"]): cr for cr in items}
        events: dict[str, dict[str, list[dict[str, Any]]]] = {}
        for cr in items:
            self._observe(cr, events)
        for request in WorkspaceRequest.objects.exclude(status__in=FINAL).with_related():
            self._converge(request, live.get((request.namespace, request.name)), listed_at)
        for (namespace, name), cr in live.items():
            request = ws.request_for_object(cr)
            if request is not None and request.status in FINAL:
                logger.info("deleting %s/%s: its request is %s", namespace, name, request.status)
                self.cluster.delete("Workspace", namespace, name)
            elif request is None and (namespace, name) not in self.strangers:
                self.strangers.add((namespace, name))
                logger.warning("%s/%s carries the portal's labels but no request of this portal", namespace, name)
        self.converge_pending()
        self.on_pass("resync")
        return version

    def converge_pending(self) -> None:
        """Between resyncs: apply what was approved, delete what is to go, expire what is due."""
        for request_id in ws.workspaces_expire():
            self._remove(request_id)
        waiting = WorkspaceRequest.objects.filter(status__in=[Status.APPROVED, Status.DELETING, Status.EXPIRED])
        for request in waiting.with_related():
            try:
                cr = self.cluster.get_workspace(request.namespace, request.name)
            except ClusterError as exc:
                logger.warning("request %s: %s", request.pk, exc.message)
                continue
            self._converge(request, cr, timezone.now())

    def _observe(self, cr: dict[str, Any], cache: dict[str, dict[str, list[dict[str, Any]]]] | None = None) -> None:
        namespace, name = cr["metadata"]["namespace"], cr["metadata"]["name"]
        events: list[dict[str, Any]] = []
        if observed_state(cr).status in EXPLAIN:
            try:
                if cache is None:
                    events = self.cluster.events(namespace, name)
                else:
                    if namespace not in cache:
                        cache[namespace] = self.cluster.namespace_events(namespace)
                    events = cache[namespace].get(name, [])
            except ClusterError as exc:
                logger.info("events of %s/%s unavailable: %s", namespace, name, exc.message)
        ws.workspace_observe(cr=cr, events=events)

    def _converge(self, request: WorkspaceRequest, cr: dict[str, Any] | None, listed_at: Any) -> None:
        try:
            if request.status in (Status.DELETING, Status.EXPIRED):
                if cr is None:
                    ws.workspace_gone(request_id=request.pk)
                else:
                    self._remove(request.pk)
            elif request.status == Status.APPROVED:
                ws.workspace_apply(request_id=request.pk, cluster=self.cluster)
            elif request.status in ws.APPLIED and cr is None:
                # Gone from a list taken after it was applied: deleted outside the portal.
                if request.applied_at is not None and request.applied_at < listed_at:
                    ws.workspace_gone(request_id=request.pk)
            elif request.status in ws.APPLIED and drifted(request_manifests(request=request)[-1], cr):
                logger.info("%s drifted from the request; applying again", request)
                ws.workspace_apply(request_id=request.pk, cluster=self.cluster)
        except ClusterError as exc:
            logger.warning("request %s: %s", request.pk, exc.message)

    def _remove(self, request_id: int) -> None:
        try:
            ws.remove_from_cluster(request_id=request_id, cluster=self.cluster)
        except ClusterError as exc:
            logger.warning("deleting request %s from the cluster: %s", request_id, exc.message)

    # -- watch ------------------------------------------------------------------------------------
    def handle(self, kind: str, cr: dict[str, Any]) -> None:
        version = (cr.get("metadata") or {}).get("resourceVersion")
        if version:
            self.resource_version = version
        if kind in ("ADDED", "MODIFIED"):
            self._observe(cr)
        elif kind == "DELETED":
            request = ws.request_for_object(cr)
            if request is not None:
                ws.workspace_gone(request_id=request.pk)
        self.on_pass("event")

    def watch_once(self) -> None:
        self.in_watch = True
        try:
            for kind, cr in self.cluster.watch_workspaces(
                resource_version=self.resource_version, timeout_seconds=self.watch_window
            ):
                self.in_watch = False
                if self.stopping.is_set() or not self.elector.is_leader():
                    return
                if kind != "BOOKMARK":
                    self.handle(kind, cr)
                else:
                    self.resource_version = cr["metadata"]["resourceVersion"]
                self.in_watch = True
        finally:
            self.in_watch = False

    # -- the loop ---------------------------------------------------------------------------------
    def run(self) -> None:
        """Until stopped: lead, resync, watch from the resourceVersion; errors are backed off, never fatal."""
        backoff = 1.0
        next_resync = 0.0
        self.elector.start()
        try:
            while not self.stopping.is_set():
                close_old_connections()  # a long-running process outlives database connections
                if not self.elector.is_leader() and not self.elector.try_acquire_or_renew():
                    self.resource_version = ""
                    self.stopping.wait(self.elector.renew_seconds)
                    continue
                try:
                    if not self.resource_version or time.monotonic() >= next_resync:
                        self.resource_version = self.resync()
                        next_resync = time.monotonic() + self.resync_seconds
                    else:
                        self.watch_once()
                        self.converge_pending()
                    backoff = 1.0
                except WatchExpired:
                    logger.info("watch expired (410 Gone); listing again")
                    self.watch_restarts += 1
                    self.resource_version = ""
                except Shutdown:
                    break
                except Exception as exc:  # the loop must survive anything: database, cluster, bugs
                    level = logging.WARNING if isinstance(exc, ClusterError) else logging.ERROR
                    logger.log(level, "reconcile failed, retrying in %.0f s: %s", backoff, exc, exc_info=level > 30)
                    self.on_pass("error")
                    self.watch_restarts += 1
                    close_old_connections()
                    self.stopping.wait(backoff)
                    backoff = min(backoff * 2, 60.0)
        finally:
            self.elector.stop()
            close_old_connections()

    def stop(self) -> None:
        self.stopping.set()
