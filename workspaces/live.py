"""The HTML fragments pushed to open pages (WebSocket) or fetched by their polling fallback."""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser
from django.template.loader import render_to_string

from workspaces import services
from workspaces.models import Status, WorkspaceRequest
from workspaces.services import workspace

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


def request_actions(user: AbstractBaseUser, obj: WorkspaceRequest) -> dict[str, object]:
    """The buttons `user` has now on the request's page; pushed again whenever the status changes them."""
    can_delete = obj.status in workspace.DELETABLE and workspace.can_delete(user, obj)
    can_decide = obj.status == Status.PENDING_APPROVAL and services.can_approve(user, obj)
    return {
        "can_withdraw": obj.status == Status.PENDING_APPROVAL and user.pk == obj.requester_id,
        "can_delete": can_delete,
        "can_recheck": obj.kind == "tuning" and (can_delete or can_decide),
        # A finished tuning job's adapter, ready to serve: name, image and the push secret as pull secret.
        "adapter_line": (
            f"{obj.name}-adapter {obj.output_image} {obj.output_push_secret}".strip()
            if obj.kind == "tuning" and obj.status == Status.SUCCEEDED and obj.output_image
            else ""
        ),
    }


def detail_context(user: AbstractBaseUser, obj: WorkspaceRequest) -> dict[str, object]:
    """What _request_live.html needs: status, history, this user's buttons, the checks and the job's progress."""
    return {"obj": obj, "events": obj.events.select_related("actor"), **request_actions(user, obj)}


def detail_parts(user: AbstractBaseUser, obj: WorkspaceRequest) -> str:
    context = detail_context(user, obj) | {"oob": True}
    return render_to_string("workspaces/_request_live.html", context).strip()


def fragment(user: AbstractBaseUser, *, request_id: int, mode: str, created: bool = False) -> str | None:
    """What `user`'s page in `mode` should swap in for this request, or None if they may not see it."""
    obj = _visible(user, request_id)
    if obj is None:
        return None
    if mode == "approvals":
        return approval_row(user, obj, created=created)
    if mode == "detail":
        return detail_parts(user, obj)
    return list_row(obj, created=created)
