"""The HTML fragments pushed to open pages (WebSocket) or fetched by their polling fallback."""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser
from django.template.loader import render_to_string

from workspaces import services
from workspaces.models import Status, WorkspaceRequest

MODES = ("list", "approvals", "detail")


def _visible(user: AbstractBaseUser, request_id: int) -> WorkspaceRequest | None:
    obj = WorkspaceRequest.objects.with_related().filter(pk=request_id).first()
    return obj if obj is not None and services.can_view(user, obj) else None


def list_row(obj: WorkspaceRequest, *, created: bool) -> str:
    row = render_to_string("workspaces/_request_row.html", {"obj": obj, "oob": not created}).strip()
    # A new request is not on the page yet: prepend it (newest first) instead of replacing by id.
    return f'<tbody hx-swap-oob="afterbegin:#request-rows">{row}</tbody>' if created else row


# A decision takes the row off every approver's queue; what happens afterwards (KAITO's progress) and requests this
# approver may not decide concern no row there. Nothing is sent for those: htmx reports each swap without a target.
DECIDED = {Status.APPROVED, Status.REJECTED, Status.WITHDRAWN}


def approval_row(user: AbstractBaseUser, obj: WorkspaceRequest, *, created: bool) -> str | None:
    if obj.status != Status.PENDING_APPROVAL or not services.can_approve(user, obj):
        if created or obj.status not in DECIDED:
            return None
        return f'<tr id="approval-{obj.pk}" hx-swap-oob="delete"></tr>'
    services.with_budgets([obj])
    row = render_to_string("workspaces/_approval_row.html", {"obj": obj, "oob": not created}).strip()
    if not created:
        return row
    # Oldest first: a new request goes last; the "nothing waits" row goes away. Both parts are <tbody>s: the
    # browser parses the message as a fragment, and a <tbody> after a top-level <tr> is dropped (its row with it).
    return (
        f'<tbody hx-swap-oob="beforeend:#approval-rows">{row}</tbody>'
        '<tbody hx-swap-oob="delete:#approvals-empty"></tbody>'
    )


def detail_parts(obj: WorkspaceRequest) -> str:
    events = obj.events.select_related("actor")
    return render_to_string("workspaces/_request_live.html", {"obj": obj, "events": events, "oob": True}).strip()


def fragment(user: AbstractBaseUser, *, request_id: int, mode: str, created: bool = False) -> str | None:
    """What `user`'s page in `mode` should swap in for this request, or None if they may not see it."""
    obj = _visible(user, request_id)
    if obj is None:
        return None
    if mode == "approvals":
        return approval_row(user, obj, created=created)
    if mode == "detail":
        return detail_parts(obj)
    return list_row(obj, created=created)
