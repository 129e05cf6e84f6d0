"""Fast checks, without a browser, for the product bugs the browser journeys found."""

import datetime as dt

import pytest
from asgiref.sync import sync_to_async
from django.test import Client
from django.utils import timezone

from tests.workspaces import kaito_play
from tests.workspaces.test_live import connect, create
from workspaces import notify, services
from workspaces.models import PendingSecret, Status, WorkspaceRequest
from workspaces.services import workspace as ws
from workspaces.services.preview import request_manifests

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("catalog")]


@pytest.mark.cluster
def test_kaito_status_seen_before_the_apply_commits_still_sets_the_expiry(
    cluster, team_ns, requester, approver, inference_payload, settings
):
    """The watch can report KAITO's first status before workspace_apply moves the request on: it must expire anyway."""
    settings.APPLY_AFTER_APPROVAL = "off"  # the test plays the apply itself, in the losing order
    request = create(requester, inference_payload)
    services.request_approve(request=request, actor=approver)
    for manifest in request_manifests(request=request, reveal=True):  # what workspace_apply sends first
        cluster.apply(manifest)
    kaito_play.patch_status(cluster.custom, team_ns, "phi-chat", kaito_play.pending())
    before = timezone.now()
    ws.workspace_observe(cr=cluster.get_workspace(team_ns, "phi-chat"))  # the watch is faster than the commit
    request.refresh_from_db()
    assert request.status == Status.PROVISIONING
    assert request.applied_at >= before and request.expires_at == request.applied_at + dt.timedelta(hours=8)
    applied_at = request.applied_at
    ws.workspace_apply(request_id=request.pk, cluster=cluster)  # its commit comes second and changes nothing
    request.refresh_from_db()
    assert (request.status, request.applied_at) == (Status.PROVISIONING, applied_at)
    assert not PendingSecret.objects.filter(request=request).exists()
    assert ws.workspaces_expire(now=request.expires_at + dt.timedelta(minutes=1)) == [request.pk]


async def test_the_request_page_gets_its_buttons_with_each_status(requester, approver, tuning_payload):
    """Withdraw goes, Delete and "Deploy with this adapter" come; pushed forms post through htmx (no CSRF field)."""
    request = await sync_to_async(create)(requester, tuning_payload)
    page, ok, _ = await connect(requester, f"?request={request.pk}")
    assert ok
    await sync_to_async(services.request_approve)(request=request, actor=approver)
    approved = await page.receive_from(timeout=5)
    assert '<div class="actions" id="request-actions" hx-swap-oob="true">' in approved
    assert 'id="withdraw"' not in approved and 'id="deploy-adapter"' not in approved
    assert f'hx-post="/workspaces/{request.pk}/delete/"' in approved and "csrfmiddlewaretoken" not in approved
    assert '<section class="card" id="preflight" hx-swap-oob="true">' in approved
    assert '<section class="card" id="tuning-progress" hx-swap-oob="true" hidden>' in approved  # not applied yet
    now = timezone.now()
    await sync_to_async(WorkspaceRequest.objects.filter(pk=request.pk).update)(status=Status.SUCCEEDED, applied_at=now)
    await sync_to_async(notify.request_changed)(request_id=request.pk)
    succeeded = await page.receive_from(timeout=5)
    assert 'id="deploy-adapter"' in succeeded and "workspace-tuning-phi-3-adapter" in succeeded
    assert f'hx-get="/workspaces/{request.pk}/logs/" hx-trigger="load"' in succeeded
    await page.disconnect()


def test_withdraw_and_delete_answer_htmx_with_a_client_redirect(client, requester, inference_payload):
    request = create(requester, inference_payload)
    client.force_login(requester)
    response = client.post(f"/workspaces/{request.pk}/withdraw/", headers={"HX-Request": "true"})
    assert response.status_code == 200 and response["HX-Redirect"] == f"/workspaces/{request.pk}/"
    assert WorkspaceRequest.objects.get(pk=request.pk).status == Status.WITHDRAWN
    plain = client.post(f"/workspaces/{request.pk}/withdraw/")  # without JavaScript: a normal redirect
    assert plain.status_code == 302 and plain["Location"] == f"/workspaces/{request.pk}/"


def test_the_preview_repeats_the_fields_errors_instead_of_calling_typed_values_missing(requester, team):
    client = Client()
    client.force_login(requester)
    form = {"team": team.pk, "name": "Bad_Name!", "preset": "phi-3-mini-128k-instruct", "hours": "100000",
            "instance_type": "Standard_NC6s_v3", "runtime": "vllm"}  # fmt: skip
    html = client.post("/workspaces/new/inference/preview/", form).content.decode()
    assert "The workspace name must be a DNS-1123 label" in html
    assert "Expiry must be between 1 and 720 hours." in html
    assert "Standard_NC6s_v3 is no longer accepted by KAITO" in html
    assert "is required" not in html
    empty = client.post("/workspaces/new/inference/preview/", {"team": team.pk}).content.decode()
    assert "Choose a model." in empty and "The workspace name is required." in empty  # empty fields keep theirs


def test_every_decision_locks_only_the_request_row(requester, approver, inference_payload):
    """PostgreSQL refused FOR UPDATE across with_related()'s outer joins: approve, reject and withdraw all failed."""
    approved = create(requester, inference_payload)
    assert services.request_approve(request=approved, actor=approver).status == Status.APPROVED
    rejected = create(requester, inference_payload | {"name": "phi-chat-2"})
    assert services.request_reject(request=rejected, actor=approver, note="too big").status == Status.REJECTED
    withdrawn = create(requester, inference_payload | {"name": "phi-chat-3"})
    assert services.request_withdraw(request=withdrawn, actor=requester).status == Status.WITHDRAWN
