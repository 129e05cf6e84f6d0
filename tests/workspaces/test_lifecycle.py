"""Approval lifecycle: transitions and their audit trail, budgets, withdrawal, e-mails, broadcasts."""

import datetime as dt
from decimal import Decimal

import pytest
from django.core import mail
from django.core.exceptions import ValidationError

from workspaces import services
from workspaces.models import Status, WorkspaceEvent, WorkspaceRequest
from workspaces.services.transitions import TRANSITIONS, _transition

pytestmark = pytest.mark.usefixtures("catalog")


def create(client, user, payload):
    client.force_login(user)
    response = client.post("/api/workspaces/", payload, content_type="application/json")
    assert response.status_code == 201, response.json()
    return WorkspaceRequest.objects.get(pk=response.json()["id"])


def test_create_estimates_cost_and_notifies_approvers(
    client, requester, approver, tuning_payload, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        request = create(client, requester, tuning_payload)
    # 1 node × $3.20/h × 4 h
    assert request.hourly_price_usd == Decimal("3.2000") and request.node_count == 1
    assert request.estimated_cost_usd == Decimal("12.80")
    assert "Azure retail price list" in request.price_source
    [event] = request.events.all()
    assert (event.actor, event.from_status, event.to_status) == (requester, "", Status.PENDING_APPROVAL)
    [message] = mail.outbox
    assert message.to == ["arne@example.com"]
    assert "Approval needed: team-ml/workspace-tuning-phi-3" in message.subject
    assert "estimated cost $12.80" in message.body and "/workspaces/" in message.body


def test_multi_node_estimate_is_costed_and_explained(client, requester, inference_payload):
    payload = {**inference_payload, "preset": "openai/gpt-oss-20b", "instance_type": "Standard_NV36ads_A10_v5"}
    request = create(client, requester, payload)
    assert request.node_count == 2
    assert request.estimated_cost_usd == Decimal("51.20")  # 2 × $3.20 × 8 h
    assert "will run openai/gpt-oss-20b on 2 × Standard_NV36ads_A10_v5 nodes" in request.events.get().message


def test_approve_writes_audit_and_mails_the_requester(
    client, requester, approver, inference_payload, django_capture_on_commit_callbacks
):
    request = create(client, requester, inference_payload)
    client.force_login(approver)
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            f"/api/workspaces/{request.pk}/approve/", {"note": "go"}, content_type="application/json"
        )
    assert response.status_code == 200 and response.json()["status"] == "APPROVED"
    request.refresh_from_db()
    assert request.decided_by == approver and request.decision_note == "go"
    last = request.events.last()
    assert (last.actor, last.from_status, last.to_status, last.message) == (
        approver,
        "PENDING_APPROVAL",
        "APPROVED",
        "go",
    )
    assert mail.outbox[-1].to == ["rita@example.com"] and "approved" in mail.outbox[-1].subject
    again = client.post(f"/api/workspaces/{request.pk}/approve/", {}, content_type="application/json")
    assert again.status_code == 400 and "not pending approval" in str(again.json())


def test_reject_needs_a_reason_and_is_final(client, requester, approver, inference_payload):
    request = create(client, requester, inference_payload)
    client.force_login(approver)
    empty = client.post(f"/api/workspaces/{request.pk}/reject/", {"note": " "}, content_type="application/json")
    assert empty.status_code == 400 and "Say why" in empty.json()["note"][0]
    response = client.post(
        f"/api/workspaces/{request.pk}/reject/", {"note": "too big"}, content_type="application/json"
    )
    assert response.json()["status"] == "REJECTED"
    assert TRANSITIONS[Status.REJECTED] == set()
    request.refresh_from_db()
    with pytest.raises(ValidationError, match="cannot become APPROVED"):
        _transition(request, to=Status.APPROVED, actor=approver)


def test_withdraw_only_while_pending(client, requester, approver, inference_payload):
    request = create(client, requester, inference_payload)
    response = client.post(
        f"/api/workspaces/{request.pk}/withdraw/", {"note": "not needed"}, content_type="application/json"
    )
    assert response.json()["status"] == "WITHDRAWN"
    assert request.events.last().message == "not needed"
    second = create(client, requester, {**inference_payload, "name": "phi-chat-2"})
    client.force_login(approver)
    client.post(f"/api/workspaces/{second.pk}/approve/", {}, content_type="application/json")
    client.force_login(requester)
    late = client.post(f"/api/workspaces/{second.pk}/withdraw/", {}, content_type="application/json")
    assert late.status_code == 400 and "still pending" in str(late.json())


def test_budget_exceeded_needs_an_explicit_override(client, requester, approver, team, inference_payload):
    team.monthly_budget_usd = Decimal("100")
    team.save()
    first = create(client, requester, {**inference_payload, "hours": 20})  # $64
    second = create(client, requester, {**inference_payload, "name": "phi-chat-2", "hours": 20})  # $64 more
    client.force_login(approver)
    assert client.post(f"/api/workspaces/{first.pk}/approve/", {}, content_type="application/json").status_code == 200
    refused = client.post(f"/api/workspaces/{second.pk}/approve/", {}, content_type="application/json")
    assert refused.status_code == 400
    assert "over its budget of $100.00" in str(refused.json()) and "$128.00" in str(refused.json())
    second.refresh_from_db()
    assert second.status == Status.PENDING_APPROVAL
    page = client.get(f"/workspaces/{second.pk}/").text
    assert 'id="over-budget"' in page and "Approve over budget" in page
    ok = client.post(
        f"/api/workspaces/{second.pk}/approve/", {"budget_override": True}, content_type="application/json"
    )
    assert ok.status_code == 200 and ok.json()["budget_override"] is True
    assert "overridden" in second.events.last().message


def test_spend_counts_only_this_month(client, requester, approver, team, inference_payload):
    request = create(client, requester, inference_payload)
    WorkspaceRequest.objects.filter(pk=request.pk).update(
        status=Status.APPROVED, decided_at=dt.datetime(2020, 1, 15, tzinfo=dt.UTC)
    )
    assert services.team_spend(team=team, month=dt.date(2020, 1, 1)) == Decimal("25.60")
    assert services.team_spend(team=team, month=dt.date(2020, 2, 1)) == Decimal("0")


def test_html_decision_and_withdraw_flow(client, requester, approver, inference_payload):
    request = create(client, requester, inference_payload)
    page = client.get(f"/workspaces/{request.pk}/").text
    assert 'id="withdraw"' in page and 'id="approve"' not in page  # nobody approves their own request
    client.force_login(approver)
    page = client.get(f"/workspaces/{request.pk}/").text
    assert 'id="approve"' in page and 'id="withdraw"' not in page
    queue = client.get("/workspaces/approvals/").text
    assert f'id="approval-{request.pk}"' in queue and "$25.60" in queue
    response = client.post(
        f"/workspaces/{request.pk}/decide/", {"action": "approve", "note": "ok", "next": "/workspaces/approvals/"}
    )
    assert response.status_code == 302 and response["Location"] == "/workspaces/approvals/"
    assert f'id="approval-{request.pk}"' not in client.get("/workspaces/approvals/").text
    request.refresh_from_db()
    assert request.status == Status.APPROVED
    events = client.get(f"/workspaces/{request.pk}/").text
    assert "Pending approval → Approved" in events and "arne" in events


def test_every_transition_is_audited(requester, approver, client, inference_payload):
    request = create(client, requester, inference_payload)
    services.request_approve(request=request, actor=approver)
    request.refresh_from_db()
    for to in (Status.PROVISIONING, Status.READY, Status.DELETING, Status.DELETED):
        _transition(request, to=to, actor=None, message=f"to {to}")
    trail = list(WorkspaceEvent.objects.filter(request=request).values_list("from_status", "to_status"))
    assert trail == [
        ("", "PENDING_APPROVAL"),
        ("PENDING_APPROVAL", "APPROVED"),
        ("APPROVED", "PROVISIONING"),
        ("PROVISIONING", "READY"),
        ("READY", "DELETING"),
        ("DELETING", "DELETED"),
    ]


def test_transition_broadcasts_after_commit(
    requester, approver, client, inference_payload, django_capture_on_commit_callbacks
):
    from asgiref.sync import async_to_sync
    from channels.layers import get_channel_layer

    from workspaces.notify import team_group

    request = create(client, requester, inference_payload)
    layer = get_channel_layer()
    channel = async_to_sync(layer.new_channel)()
    async_to_sync(layer.group_add)(team_group(request.team_id), channel)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        services.request_approve(request=request, actor=approver)
    assert callbacks, "the broadcast waits for the commit"
    for callback in callbacks:
        callback()
    message = async_to_sync(layer.receive)(channel)
    assert message == {"type": "request.changed", "request_id": request.pk, "created": False}
