"""Keeping the cluster in line with the database: apply, observe, delete and expire workspaces."""

from __future__ import annotations

import datetime as dt
import logging
import threading
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import connections, transaction
from django.utils import timezone

from workspaces import notify
from workspaces.cluster import Cluster, ClusterConflict, ClusterError, ClusterInvalid
from workspaces.kaito.spec import REQUEST_LABEL, hf_token_secret_name, push_secret_name
from workspaces.kaito.status import Observed, observed_state
from workspaces.models import Membership, Status, WorkspaceRequest
from workspaces.services.clusters import get_cluster
from workspaces.services.preview import request_manifests
from workspaces.services.secrets import SecretUnavailable, secrets_discard
from workspaces.services.transitions import TRANSITIONS, _transition

logger = logging.getLogger(__name__)
# Statuses in which the request wants its objects in the cluster; the same ones may be deleted.
WANTS_APPLIED = {Status.APPROVED, Status.PROVISIONING, Status.READY, Status.RUNNING, Status.FAILED, Status.SUCCEEDED}
DELETABLE = WANTS_APPLIED
# Statuses reached only after an apply succeeded.
APPLIED = WANTS_APPLIED - {Status.APPROVED}
OBSERVED_FIELDS = ["status_message", "kaito_state", "conditions", "target_node_count", "worker_nodes", "performance"]


def _record_error(request_id: int, message: str) -> None:
    updated = WorkspaceRequest.objects.filter(pk=request_id).exclude(last_error=message).update(last_error=message)
    if updated:
        notify_after_commit(request_id)


def notify_after_commit(request_id: int) -> None:
    transaction.on_commit(lambda: notify.request_changed(request_id=request_id))


def workspace_apply(*, request_id: int, cluster: Cluster | None = None) -> WorkspaceRequest:
    """Create or update the request's Secrets, ConfigMaps and Workspace; idempotent, safe to repeat.

    Cluster I/O happens outside any database transaction. Unreachable/forbidden: the status stays and the
    error is recorded for a retry. Refused by the API server (422/400): FAILED with the server's message.
    """
    request = WorkspaceRequest.objects.with_related().get(pk=request_id)
    if request.status not in WANTS_APPLIED:
        return request
    cluster = cluster or get_cluster()
    try:
        objects = request_manifests(request=request, reveal=True)
    except SecretUnavailable as exc:
        _fail(request_id, f"{exc} Ask the requester to submit the request again.")
        return request
    workspace = None
    try:
        for manifest in objects:
            workspace = _apply_one(cluster, manifest)
        for manifest in objects[:-1]:  # Secrets and ConfigMaps go away with their Workspace
            cluster.set_owner(manifest, workspace)
    except ClusterInvalid as exc:
        _fail(request_id, f"The cluster refused the {manifest['kind']}: {exc.message}")
        return request
    except ClusterError as exc:
        logger.warning("applying request %s failed: %s", request_id, exc.message)
        _record_error(request_id, exc.message)
        raise
    with transaction.atomic():
        request = WorkspaceRequest.objects.select_for_update().get(pk=request_id)
        secrets_discard(request=request)  # from now on the secrets exist only in the cluster
        if request.status == Status.APPROVED:
            now = timezone.now()
            _transition(
                request,
                to=Status.PROVISIONING,
                actor=None,
                message="Applied to the cluster; KAITO is provisioning GPU nodes",
                applied_at=now,
                expires_at=now + dt.timedelta(hours=request.hours),
                last_error="",
            )
        elif request.last_error:
            request.last_error = ""
            request.save(update_fields=["last_error", "updated_at"])
            notify_after_commit(request.pk)
    return request


def _apply_one(cluster: Cluster, manifest: dict[str, Any]) -> dict[str, Any]:
    try:
        return cluster.apply(manifest)
    except ClusterConflict as exc:
        # Someone changed fields the portal owns; the database is the desired state, so take them back.
        logger.warning("%s %s: %s; re-applying with force", manifest["kind"], manifest["metadata"]["name"], exc)
        return cluster.apply(manifest, force=True)


def _fail(request_id: int, message: str) -> None:
    with transaction.atomic():
        request = WorkspaceRequest.objects.select_for_update().get(pk=request_id)
        if Status.FAILED in TRANSITIONS[request.status]:
            _transition(
                request, to=Status.FAILED, actor=None, message=message, status_message=message, last_error=message
            )


def request_for_object(cr: dict[str, Any]) -> WorkspaceRequest | None:
    metadata = cr.get("metadata") or {}
    request_id = (metadata.get("labels") or {}).get(REQUEST_LABEL, "")
    if not request_id.isdigit():
        return None
    return WorkspaceRequest.objects.filter(
        pk=int(request_id), namespace=metadata.get("namespace"), name=metadata.get("name")
    ).first()


def workspace_observe(*, cr: dict[str, Any], events: list[dict[str, Any]] = ()) -> WorkspaceRequest | None:
    """Mirror what KAITO reports into the request; writes (and broadcasts) only when something changed."""
    found = request_for_object(cr)
    if found is None:
        return None
    observed = observed_state(cr, events)
    with transaction.atomic():
        request = WorkspaceRequest.objects.select_for_update().get(pk=found.pk)
        if request.status == Status.APPROVED and observed.status == Status.DELETING:
            return request
        values = _observed_values(observed)
        values["observed_at"] = timezone.now()
        target = _target_status(request, observed)
        if target is not None:
            if request.status == Status.APPROVED and request.applied_at is None:
                # The watch saw KAITO's status before workspace_apply committed its own move to PROVISIONING (it
                # then finds PROVISIONING and leaves it): the Workspace exists, so it was applied just now. Without
                # this the request had no expiry and would hold its GPU nodes for good.
                values["applied_at"] = values["observed_at"]
                values["expires_at"] = values["observed_at"] + dt.timedelta(hours=request.hours)
            _transition(request, to=target, actor=None, message=observed.message, **values)
        elif any(getattr(request, name) != values[name] for name in OBSERVED_FIELDS):
            for name, value in values.items():
                setattr(request, name, value)
            request.save(update_fields=[*values, "updated_at"])
            notify_after_commit(request.pk)
    return request


def _observed_values(observed: Observed) -> dict[str, Any]:
    return {
        "status_message": observed.message,
        "kaito_state": observed.kaito_state,
        "conditions": observed.conditions,
        "target_node_count": observed.target_node_count,
        "worker_nodes": observed.worker_nodes,
        "performance": observed.performance,
    }


def _target_status(request: WorkspaceRequest, observed: Observed) -> str | None:
    if observed.status == request.status or request.status in (Status.DELETING, Status.EXPIRED):
        return None
    if request.status == Status.APPROVED and observed.status != Status.PROVISIONING:
        return None  # the apply step moves APPROVED on; a stale object must not skip it
    if observed.status in TRANSITIONS[request.status]:
        return observed.status
    logger.info("request %s: KAITO says %s, keeping %s", request.pk, observed.status, request.status)
    return None


def workspace_gone(*, request_id: int) -> WorkspaceRequest:
    """The Workspace no longer exists in the cluster: finish a deletion, or say it was deleted elsewhere."""
    with transaction.atomic():
        request = WorkspaceRequest.objects.select_for_update().get(pk=request_id)
        if request.status in (Status.DELETING, Status.EXPIRED):
            message = "Deleted from the cluster" if request.status == Status.DELETING else "Removed after it expired"
            _transition(request, to=Status.DELETED, actor=None, message=message, status_message=message)
        elif request.applied_at is not None and request.status in APPLIED:
            message = "The Workspace was deleted outside the portal"
            _transition(request, to=Status.DELETED, actor=None, message=message, status_message=message)
    return request


def apply_after_approval(*, request_id: int) -> None:
    """Right after an approval commits: apply now (in the background unless configured inline).

    If this fails or the process dies, the reconciler's resync applies the request anyway.
    """
    mode = settings.APPLY_AFTER_APPROVAL
    if mode == "off":
        return
    if mode == "inline":
        _apply_quietly(request_id)
        return
    threading.Thread(target=_apply_quietly, args=(request_id,), name=f"apply-{request_id}", daemon=True).start()


def _apply_quietly(request_id: int) -> None:
    try:
        workspace_apply(request_id=request_id)
    except ClusterError:
        pass  # recorded on the request; the reconciler retries
    except Exception:
        logger.exception("applying request %s failed", request_id)
    finally:
        if threading.current_thread() is not threading.main_thread():
            connections.close_all()


def can_delete(user: AbstractBaseUser, request: WorkspaceRequest) -> bool:
    if user.is_superuser or user.pk == request.requester_id:
        return True
    return Membership.objects.filter(team_id=request.team_id, user=user, role=Membership.Role.APPROVER).exists()


@transaction.atomic
def workspace_delete(
    *, request: WorkspaceRequest, actor: AbstractBaseUser | None, message: str = ""
) -> WorkspaceRequest:
    """Ask for the Workspace to go: DELETING now, DELETED once the cluster confirms it is gone."""
    request = WorkspaceRequest.objects.select_for_update().get(pk=request.pk)
    if actor is not None and not can_delete(actor, request):
        raise PermissionDenied("Only the requester, an approver of the team or an admin can delete this workspace.")
    if Status.DELETING not in TRANSITIONS[request.status]:
        raise ValidationError(f"A {request.get_status_display().lower()} request has nothing to delete.")
    _transition(request, to=Status.DELETING, actor=actor, message=message or "Deletion requested")
    request_id = request.pk
    transaction.on_commit(lambda: remove_from_cluster_quietly(request_id=request_id))
    return request


def remove_from_cluster(*, request_id: int, cluster: Cluster | None = None) -> bool:
    """Delete the Workspace and the objects the portal made for it; True when nothing is left."""
    request = WorkspaceRequest.objects.get(pk=request_id)
    cluster = cluster or get_cluster()
    cluster.delete("Secret", request.namespace, hf_token_secret_name(request.name))
    cluster.delete("Secret", request.namespace, push_secret_name(request.name))
    cluster.delete("ConfigMap", request.namespace, f"{request.name}-inference-config")
    cluster.delete("ConfigMap", request.namespace, f"{request.name}-training-config")
    existed = cluster.delete("Workspace", request.namespace, request.name)
    if not existed or cluster.get_workspace(request.namespace, request.name) is None:
        workspace_gone(request_id=request_id)
        return True
    return False


def remove_from_cluster_quietly(*, request_id: int) -> None:
    """After a commit: try now; if the cluster is away, the reconciler's resync finishes the job."""
    try:
        remove_from_cluster(request_id=request_id)
    except ClusterError as exc:
        _record_error(request_id, exc.message)


def workspaces_expire(*, now: dt.datetime | None = None) -> list[int]:
    """Inference past its expiry and tuning past its approved hours: EXPIRED, and deleted from the cluster."""
    now = now or timezone.now()
    due = WorkspaceRequest.objects.filter(
        status__in=[Status.PROVISIONING, Status.READY, Status.RUNNING, Status.FAILED, Status.SUCCEEDED],
        expires_at__lte=now,
    ).values_list("pk", flat=True)
    expired = []
    for request_id in due:
        with transaction.atomic():
            request = WorkspaceRequest.objects.select_for_update().get(pk=request_id)
            what = "expired" if request.kind == "inference" else "ran past its approved run time"
            message = f"The workspace {what} ({request.hours} h); deleting it to release the GPU nodes"
            target = Status.EXPIRED if Status.EXPIRED in TRANSITIONS[request.status] else Status.DELETING
            _transition(request, to=target, actor=None, message=message, status_message=message)
        expired.append(request_id)
    return expired


@dataclass(frozen=True)
class LogTail:
    pod: str = ""
    text: str = ""
    problem: str = ""


def tuning_logs(*, request: WorkspaceRequest, lines: int = 200, cluster: Cluster | None = None) -> LogTail:
    """The last lines of the tuning Job's newest pod (KAITO names the main container after the workspace)."""
    try:
        cluster = cluster or get_cluster()
        pods = cluster.pods(request.namespace, request.name)
        if not pods:
            return LogTail(problem="The tuning job has no pod yet.")
        newest = max(pods, key=lambda pod: pod["metadata"].get("creationTimestamp") or "")
        name = newest["metadata"]["name"]
        return LogTail(pod=name, text=cluster.logs(request.namespace, name, container=request.name, tail_lines=lines))
    except ClusterError as exc:
        return LogTail(problem=f"The logs are not available: {exc.message}")
