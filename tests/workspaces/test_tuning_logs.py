"""Tuning progress: the job pod's log lines reach the request page through the real API server's pods/log."""

import pytest

from devcluster.kaito_standin import KaitoStandin
from devcluster.kubelet_standin import KubeletStandin
from devcluster.standin.plays import Settings
from devcluster.standin.testing import wait_for
from tests.workspaces.test_cluster import approve
from tests.workspaces.test_reconciler import make_reconciler
from workspaces.models import Status, WorkspaceRequest

pytestmark = [pytest.mark.cluster, pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("catalog")]


def test_job_logs_are_followed_on_the_request_page(
    control_plane, cluster, team_ns, k8s_namespace, client, requester, approver, tuning_payload
):
    request = approve(client, requester, approver, tuning_payload)
    selector = f"kaito-portal/request-id={request.pk}"
    with KubeletStandin(control_plane.api_client, line_seconds=0.1, poll_seconds=0.2) as kubelet:
        settings = Settings(step_seconds=0.2, training_steps=15, kubelet=kubelet.endpoint)
        with KaitoStandin(control_plane.api_client, settings, selector=selector, watch_timeout=5):
            reconciler = make_reconciler(cluster, k8s_namespace)
            wait_for(
                "the tuning job to run",
                lambda: reconciler.resync() and WorkspaceRequest.objects.get(pk=request.pk).status == Status.RUNNING,
                timeout=60,
            )
            client.force_login(requester)
            first = client.get(f"/workspaces/{request.pk}/logs/")
            # Like KAITO's, the job is Running while its init containers still download the dataset.
            assert "waiting to start" in first.text or "loss" in first.text
            running = wait_for(
                "training lines",
                lambda: (page := client.get(f"/workspaces/{request.pk}/logs/")) and "loss" in page.text and page,
                timeout=60,
            )
            assert running.status_code == 200  # still following: htmx keeps polling
            assert 'hx-trigger="every 3s"' in running.text and "· following" in running.text
            assert "loss" in running.text
            wait_for(
                "the tuning job to succeed",
                lambda: reconciler.resync() and WorkspaceRequest.objects.get(pk=request.pk).status == Status.SUCCEEDED,
                timeout=90,
            )
            done = client.get(f"/workspaces/{request.pk}/logs/")
            assert done.status_code == 286  # the job ended: polling stops
            assert "· following" not in done.text and "loss" in done.text
    page = client.get(f"/workspaces/{request.pk}/").text
    assert 'id="deploy-adapter"' in page and "Tuning finished" in page
