"""Telling people: live updates over the channel layer and e-mails, always sent after commit."""

from __future__ import annotations

import logging

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings
from django.core.mail import send_mail
from django.urls import reverse

from workspaces.models import Membership, WorkspaceRequest

logger = logging.getLogger(__name__)


def team_group(team_id: int) -> str:
    return f"requests.team.{team_id}"


def request_group(request_id: int) -> str:
    return f"requests.request.{request_id}"


ALL_GROUP = "requests.all"  # admins see every team's requests


def request_changed(*, request_id: int, created: bool = False) -> None:
    """Tell every open page that shows this request to re-render it (consumers check permissions)."""
    layer = get_channel_layer()
    if layer is None:
        return
    team_id = WorkspaceRequest.objects.filter(pk=request_id).values_list("team_id", flat=True).first()
    message = {"type": "request.changed", "request_id": request_id, "created": created}
    try:
        for group in (team_group(team_id), request_group(request_id), ALL_GROUP):
            async_to_sync(layer.group_send)(group, message)
    except Exception:
        # A broken channel layer must not undo a committed transition; pages fall back to polling.
        logger.exception("could not broadcast the change of request %s", request_id)


def _link(request: WorkspaceRequest) -> str:
    return settings.BASE_URL.rstrip("/") + reverse("workspaces:request-detail", args=[request.pk])


def _mail(subject: str, body: str, recipients: list[str]) -> None:
    recipients = sorted({r for r in recipients if r})
    if not recipients:
        return
    try:
        send_mail(f"[KAITO Portal] {subject}", body, settings.DEFAULT_FROM_EMAIL, recipients)
    except Exception:
        logger.exception("could not send %r to %d recipient(s)", subject, len(recipients))


def approval_needed(*, request_id: int) -> None:
    request = WorkspaceRequest.objects.with_related().get(pk=request_id)
    approvers = Membership.objects.filter(team_id=request.team_id, role=Membership.Role.APPROVER).exclude(
        user_id=request.requester_id
    )
    cost = f"${request.estimated_cost_usd:,.2f}" if request.estimated_cost_usd is not None else "not estimated"
    body = (
        f"{request.requester.get_username()} asks for a {request.get_kind_display().lower()} workspace "
        f"{request.namespace}/{request.name} running {request.preset.name} on "
        f"{request.instance_type or 'their own nodes'} for {request.hours} h (estimated cost {cost}).\n\n"
        f"Purpose: {request.purpose or '—'}\n\nDecide: {_link(request)}\n"
    )
    _mail(f"Approval needed: {request}", body, [m.user.email for m in approvers.select_related("user")])


def decided(*, request_id: int) -> None:
    request = WorkspaceRequest.objects.with_related().get(pk=request_id)
    verdict = request.get_status_display().lower()
    body = (
        f"Your request {request.namespace}/{request.name} was {verdict} by "
        f"{request.decided_by.get_username() if request.decided_by else 'the portal'}.\n\n"
        f"Note: {request.decision_note or '—'}\n\nDetails: {_link(request)}\n"
    )
    _mail(f"Request {verdict}: {request}", body, [request.requester.email])
