"""Fast checks, without a browser, for the product bugs the browser journeys found."""

import datetime as dt

import pytest
from django.utils import timezone

from tests.workspaces import kaito_play
from tests.workspaces.test_live import create
from workspaces import services
from workspaces.models import PendingSecret, Status
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
