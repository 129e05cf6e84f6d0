"""The reconciler against the real API server: status follows KAITO, and every fault ends in agreement."""

import datetime as dt
import threading
import time

import pytest
from kubernetes import client as k8s

from tests.workspaces import kaito_play
from tests.workspaces.test_cluster import approve
from workspaces.cluster import ClusterUnavailable
from workspaces.leader import LeaderElector
from workspaces.models import Status, WorkspaceRequest
from workspaces.reconciler import Reconciler
from workspaces.services import workspace as ws

pytestmark = [pytest.mark.cluster, pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("catalog")]


def make_reconciler(cluster, namespace, identity="r1", **kwargs):
    elector = LeaderElector(cluster, namespace=namespace, identity=identity, lease_seconds=6, renew_seconds=1)
    return Reconciler(
        cluster,
        elector=elector,
        resync_seconds=kwargs.pop("resync_seconds", 300),
        watch_window=kwargs.pop("watch_window", 2),
        **kwargs,
    )


@pytest.fixture
def running(cluster, team_ns):
    """Start reconcilers in threads; stop them (and wait) at the end of the test."""
    started = []

    def start(identity="r1", **kwargs):
        reconciler = make_reconciler(cluster, team_ns, identity, **kwargs)
        thread = threading.Thread(target=reconciler.run, daemon=True)
        thread.start()
        started.append((reconciler, thread))
        return reconciler

    yield start
    for reconciler, thread in started:
        reconciler.stop()
        thread.join(timeout=20)
        assert not thread.is_alive(), "the reconciler did not stop"


def wait_for(predicate, timeout=20.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def status_of(request):
    return WorkspaceRequest.objects.values_list("status", flat=True).get(pk=request.pk)


def test_status_follows_kaito(running, cluster, team_ns, client, requester, approver, inference_payload):
    request = approve(client, requester, approver, inference_payload)
    running()
    custom = cluster.custom
    kaito_play.patch_status(custom, team_ns, "phi-chat", kaito_play.pending())
    wait_for(
        lambda: "Waiting for a GPU node" in WorkspaceRequest.objects.get(pk=request.pk).status_message,
        what="the pending explanation",
    )
    kaito_play.patch_status(custom, team_ns, "phi-chat", kaito_play.ready(("aks-gpu-1",)))
    wait_for(lambda: status_of(request) == Status.READY, what="READY")
    request.refresh_from_db()
    assert request.kaito_state == "Ready" and request.worker_nodes == ["aks-gpu-1"]
    assert request.performance["peakTokensPerMinute"]["value"] == "48000"
    assert request.status_message == "The model is ready to chat."
    trail = list(request.events.values_list("to_status", flat=True))
    assert trail == ["PENDING_APPROVAL", "APPROVED", "PROVISIONING", "READY"]


def test_resync_explains_with_events(cluster, team_ns, client, requester, approver, inference_payload, k8s_api_client):
    request = approve(client, requester, approver, inference_payload)
    kaito_play.patch_status(cluster.custom, team_ns, "phi-chat", kaito_play.pending())
    k8s.CoreV1Api(k8s_api_client).create_namespaced_event(
        team_ns,
        {
            "metadata": {"name": "phi-chat.quota", "namespace": team_ns},
            "involvedObject": {
                "kind": "Workspace",
                "name": "phi-chat",
                "namespace": team_ns,
                "apiVersion": "kaito.sh/v1beta1",
            },
            "reason": "ProvisioningFailed",
            "type": "Warning",
            "lastTimestamp": "2026-11-28T10:00:00Z",
            "message": "exceeding approved Standard NCADS_A100_v4 Family vCPUs quota in eastus",
        },
    )
    make_reconciler(cluster, team_ns).resync()
    request.refresh_from_db()
    assert "the cloud GPU quota is exhausted" in request.status_message


def test_apiserver_restart_during_a_watch(
    running, control_plane, cluster, team_ns, client, requester, approver, inference_payload
):
    request = approve(client, requester, approver, inference_payload)
    reconciler = running()
    wait_for(lambda: reconciler.resource_version, what="the first list")
    control_plane.restart_apiserver()
    kaito_play.patch_status(cluster.custom, team_ns, "phi-chat", kaito_play.ready())
    wait_for(lambda: status_of(request) == Status.READY, timeout=40, what="READY after the restart")
    assert reconciler.watch_restarts >= 1


def test_watch_from_a_compacted_resource_version_relists(
    control_plane, cluster, team_ns, client, requester, approver, inference_payload
):
    request = approve(client, requester, approver, inference_payload)
    reconciler = make_reconciler(cluster, team_ns)
    old = reconciler.resync()
    kaito_play.patch_status(cluster.custom, team_ns, "phi-chat", kaito_play.ready())
    control_plane.expire_watch_history()
    reconciler.resource_version = old
    with pytest.raises(Exception) as gone:
        reconciler.watch_once()
    assert type(gone.value).__name__ == "WatchExpired"
    # What run() does next: list again, which brings the missed change in.
    reconciler.resource_version = reconciler.resync()
    assert status_of(request) == Status.READY


def test_conflict_on_update_is_resolved_in_favour_of_the_request(
    cluster, team_ns, client, requester, approver, inference_payload
):
    request = approve(client, requester, approver, inference_payload)
    # Someone else takes ownership of a field the portal set, with another value.
    cluster.custom.patch_namespaced_custom_object(
        "kaito.sh",
        "v1beta1",
        team_ns,
        "workspaces",
        "phi-chat",
        {
            "apiVersion": "kaito.sh/v1beta1",
            "kind": "Workspace",
            "metadata": {"name": "phi-chat"},
            "inference": {"preset": {"name": "phi-4"}},
        },
        field_manager="kubectl-edit",
        force=True,
        _content_type="application/apply-patch+yaml",
    )
    make_reconciler(cluster, team_ns).resync()  # drift found → apply → 409 → re-apply with force
    live = cluster.get_workspace(team_ns, "phi-chat")
    assert live["inference"]["preset"]["name"] == "phi-3-mini-128k-instruct"
    assert status_of(request) == Status.PROVISIONING
    assert request.events.filter(to_status=Status.PROVISIONING).count() == 1


def test_crash_between_secret_and_workspace(
    cluster, team_ns, client, requester, approver, tuning_payload, settings, k8s_api_client
):
    settings.APPLY_AFTER_APPROVAL = "off"
    request = approve(client, requester, approver, tuning_payload)
    objects = ws.request_manifests(request=request, reveal=True)
    cluster.apply(objects[0])  # the Secret is created, then the process "dies"
    assert cluster.get_workspace(team_ns, "workspace-tuning-phi-3") is None
    make_reconciler(cluster, team_ns).resync()
    assert cluster.get_workspace(team_ns, "workspace-tuning-phi-3") is not None
    secrets = k8s.CoreV1Api(k8s_api_client).list_namespaced_secret(team_ns).items
    assert [s.metadata.name for s in secrets] == ["workspace-tuning-phi-3-push"]
    assert status_of(request) == Status.PROVISIONING


def test_two_reconcilers_never_act_at_once(
    running, cluster, team_ns, client, requester, approver, inference_payload, settings
):
    settings.APPLY_AFTER_APPROVAL = "off"
    acted = {"r1": 0, "r2": 0}
    first = running("r1", on_pass=lambda what: acted.__setitem__("r1", acted["r1"] + 1))
    second = running("r2", on_pass=lambda what: acted.__setitem__("r2", acted["r2"] + 1))
    requests = [approve(client, requester, approver, {**inference_payload, "name": f"ws-{i}"}) for i in range(3)]
    wait_for(lambda: all(status_of(r) == Status.PROVISIONING for r in requests), what="all applied")
    leaders = [r for r in (first, second) if r.elector.is_leader()]
    assert len(leaders) == 1
    follower = "r2" if leaders[0] is first else "r1"
    assert acted[follower] == 0
    for request in requests:
        assert request.events.filter(to_status=Status.PROVISIONING).count() == 1
    assert len(cluster.list_workspaces()[0]) >= 3


def test_cluster_unreachable_for_a_while(
    control_plane, cluster, team_ns, client, requester, approver, inference_payload
):
    control_plane.stop_apiserver()
    try:
        request = approve(client, requester, approver, inference_payload)
        request.refresh_from_db()
        assert request.status == Status.APPROVED
        assert "unreachable" in request.last_error
        with pytest.raises(ClusterUnavailable):
            make_reconciler(cluster, team_ns).resync()
    finally:
        control_plane.start_apiserver()
    make_reconciler(cluster, team_ns).resync()
    request.refresh_from_db()
    assert request.status == Status.PROVISIONING and request.last_error == ""


def test_delete_from_the_portal(cluster, team_ns, client, requester, approver, inference_payload):
    request = approve(client, requester, approver, inference_payload)
    client.force_login(requester)
    response = client.post(f"/api/workspaces/{request.pk}/delete/", {}, content_type="application/json")
    assert response.status_code == 200
    assert status_of(request) == Status.DELETED
    assert cluster.get_workspace(team_ns, "phi-chat") is None
    assert list(request.events.values_list("to_status", flat=True))[-2:] == ["DELETING", "DELETED"]


def test_deleted_outside_the_portal(cluster, team_ns, client, requester, approver, inference_payload):
    request = approve(client, requester, approver, inference_payload)
    reconciler = make_reconciler(cluster, team_ns)
    assert reconciler.elector.try_acquire_or_renew()  # only the leader acts on watch events
    reconciler.resource_version = reconciler.resync()
    cluster.delete("Workspace", team_ns, "phi-chat")
    reconciler.watch_once()
    request.refresh_from_db()
    assert request.status == Status.DELETED
    assert request.status_message == "The Workspace was deleted outside the portal"


def test_expired_workspaces_are_deleted_with_an_audit_event(
    cluster, team_ns, client, requester, approver, inference_payload
):
    request = approve(client, requester, approver, inference_payload)
    WorkspaceRequest.objects.filter(pk=request.pk).update(expires_at=dt.datetime(2020, 1, 1, tzinfo=dt.UTC))
    make_reconciler(cluster, team_ns).resync()
    assert cluster.get_workspace(team_ns, "phi-chat") is None
    trail = list(request.events.values_list("to_status", "message"))
    assert trail[-2][0] == "EXPIRED" and "expired (8 h)" in trail[-2][1]
    assert trail[-1] == ("DELETED", "Removed after it expired")
