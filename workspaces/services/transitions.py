"""The table of allowed status moves and the one function that makes them, with the audit event."""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.db import transaction

from workspaces import notify
from workspaces.models import Status, WorkspaceEvent, WorkspaceRequest

# The only moves a request can make; `_transition` refuses anything else.
TRANSITIONS: dict[str, set[str]] = {
    Status.PENDING_APPROVAL: {Status.APPROVED, Status.REJECTED, Status.WITHDRAWN},
    Status.APPROVED: {Status.PROVISIONING, Status.FAILED, Status.DELETING, Status.DELETED},
    Status.PROVISIONING: {
        Status.READY,
        Status.RUNNING,
        Status.SUCCEEDED,
        Status.FAILED,
        Status.DELETING,
        Status.EXPIRED,
        Status.DELETED,
    },
    Status.READY: {Status.PROVISIONING, Status.FAILED, Status.DELETING, Status.EXPIRED, Status.DELETED},
    Status.RUNNING: {
        Status.PROVISIONING,
        Status.SUCCEEDED,
        Status.FAILED,
        Status.DELETING,
        Status.EXPIRED,
        Status.DELETED,
    },
    Status.SUCCEEDED: {Status.DELETING, Status.DELETED},
    Status.FAILED: {
        Status.PROVISIONING,
        Status.READY,
        Status.RUNNING,
        Status.SUCCEEDED,
        Status.DELETING,
        Status.DELETED,
    },
    Status.EXPIRED: {Status.DELETED},
    Status.DELETING: {Status.DELETED},
    Status.REJECTED: set(),
    Status.WITHDRAWN: set(),
    Status.DELETED: set(),
}


def _transition(
    request: WorkspaceRequest, *, to: str, actor: AbstractBaseUser | None, message: str = "", **fields: object
) -> WorkspaceEvent:
    """The one place a status changes: checks the move, saves, writes the audit event, broadcasts after commit."""
    if to not in TRANSITIONS[request.status]:
        raise ValidationError(f"A request that is {request.get_status_display().lower()} cannot become {to}.")
    from_status = request.status
    request.status = to
    for name, value in fields.items():
        setattr(request, name, value)
    request.save(update_fields=["status", "updated_at", *fields])
    event = WorkspaceEvent.objects.create(
        request=request, actor=actor, from_status=from_status, to_status=to, message=message
    )
    request_id = request.pk
    transaction.on_commit(lambda: notify.request_changed(request_id=request_id))
    return event
