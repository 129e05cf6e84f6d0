"""The chart's RBAC on the real API server: the reconciler's real work succeeds, everything else is refused."""

import base64
import time

import pytest
from kubernetes import client as k8s

from tests.deploy.chart import apply_all, create_namespaces, render
from tests.workspaces import kaito_play
from tests.workspaces.test_cluster import approve
from workspaces.cluster import ClusterForbidden, ConnectionSettings, connect
from workspaces.kaito.manifests import GROUP, VERSION
from workspaces.leader import LeaderElector
from workspaces.models import Status, Team, WorkspaceRequest
from workspaces.reconciler import Reconciler
from workspaces.services import workspace as ws
from workspaces.services.clusters import set_cluster

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("catalog", "helm")]
TRAINING = "training_config:\n  QuantizationConfig:\n    load_in_4bit: true\n"


@pytest.fixture
def installed(tmp_path, control_plane, k8s_api_client, k8s_namespace):
    """The chart's ServiceAccounts, RBAC and admission guard applied for real; two team namespaces and one other."""
    home = k8s_namespace
    teams = [f"{home[:50]}-t1", f"{home[:50]}-t2"]
    other = f"{home[:50]}-other"
    create_namespaces(k8s_api_client, *teams, other)
    objects = render(tmp_path, namespace=home, teamNamespaces=teams)
    wanted = {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"}
    wanted |= {"ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"}
    apply_all(k8s_api_client, [o for o in objects if o["kind"] in wanted], home)
    return {"home": home, "teams": teams, "other": other}


def as_service_account(control_plane, namespace, name):
    token = control_plane.service_account_token(namespace, name, create=False)
    return connect(ConnectionSettings(kubeconfig=str(control_plane.kubeconfig_for_token(token))))


def wait_for_guard(cluster, api, namespace, timeout=30.0):
    """The admission policy acts a moment after it is created: wait until a dry-run on a foreign object is refused."""
    k8s.CoreV1Api(api).create_namespaced_config_map(namespace, {"metadata": {"name": "guard-probe"}})
    probe = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "guard-probe", "namespace": namespace}}
    probe["metadata"]["labels"] = {"app.kubernetes.io/managed-by": "kaito-portal"}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            cluster.apply(probe, force=True, dry_run=True)
        except ClusterForbidden:
            return
        time.sleep(0.2)
    raise AssertionError("the admission guard never refused a foreign object")


@pytest.fixture
def reconciler_cluster(control_plane, installed, k8s_api_client):
    cluster = as_service_account(control_plane, installed["home"], "kp-kaito-portal-reconciler")
    wait_for_guard(cluster, k8s_api_client, installed["teams"][1])
    set_cluster(cluster)  # deletions after commit go through get_cluster(): the same identity
    yield cluster
    set_cluster(None)


def foreign_secret(api, namespace):
    """A Secret someone else made in a team namespace (e.g. a database password)."""
    body = {"metadata": {"name": "db-password", "namespace": namespace}, "stringData": {"password": "hunter2-xyz"}}
    k8s.CoreV1Api(api).create_namespaced_secret(namespace, body)
    return "db-password"


def test_reconciler_does_its_work_with_exactly_the_charts_rbac(
    reconciler_cluster, installed, k8s_api_client, client, requester, approver, tuning_payload, team
):
    cluster, home, ns = reconciler_cluster, installed["home"], installed["teams"][0]
    Team.objects.filter(pk=team.pk).update(namespace=ns)
    request = approve(client, requester, approver, {**tuning_payload, "training_config": TRAINING})
    assert WorkspaceRequest.objects.get(pk=request.pk).status == Status.APPROVED  # nothing applied yet

    elector = LeaderElector(cluster, namespace=home, identity="r1", lease_seconds=15, renew_seconds=5)
    assert elector.try_acquire_or_renew() and elector.try_acquire_or_renew()  # create, then get + update
    rival = LeaderElector(cluster, namespace=home, identity="r2")
    assert not rival.try_acquire_or_renew()
    reconciler = Reconciler(cluster, elector=elector)

    reconciler.resync()  # list cluster-wide, apply Secret + ConfigMap + Workspace, set owners
    request.refresh_from_db()
    assert request.status == Status.PROVISIONING, request.last_error
    admin = k8s.CoreV1Api(k8s_api_client)
    push = admin.read_namespaced_secret("workspace-tuning-phi-3-push", ns)
    assert push.metadata.owner_references[0].kind == "Workspace"
    assert admin.read_namespaced_config_map("workspace-tuning-phi-3-training-config", ns).data

    kaito_play.patch_status(k8s.CustomObjectsApi(k8s_api_client), ns, "workspace-tuning-phi-3", kaito_play.pending())
    reconciler.resync()  # observe + Events and pods of the namespace
    kaito_play.patch_status(
        k8s.CustomObjectsApi(k8s_api_client), ns, "workspace-tuning-phi-3", kaito_play.tuning_running()
    )
    version = reconciler.resync()
    assert WorkspaceRequest.objects.get(pk=request.pk).status == Status.RUNNING
    reconciler.resource_version = version
    reconciler.watch_window = 1
    reconciler.watch_once()  # the cluster-wide watch is allowed too

    ws.workspace_delete(request=request, actor=requester)  # after commit: delete through get_cluster()
    reconciler.converge_pending()
    assert WorkspaceRequest.objects.get(pk=request.pk).status == Status.DELETED
    assert cluster.get_workspace(ns, "workspace-tuning-phi-3") is None
    elector.stop()  # hands the Lease back (get + update)
    lease = k8s.CoordinationV1Api(k8s_api_client).read_namespaced_lease("kaito-portal-reconciler", home)
    assert lease.spec.holder_identity is None


def test_reconciler_is_refused_everything_else(reconciler_cluster, installed, k8s_api_client):
    cluster, ns, other = reconciler_cluster, installed["teams"][1], installed["other"]
    name = foreign_secret(k8s_api_client, ns)
    with pytest.raises(ClusterForbidden, match='cannot get resource "secrets"'):
        cluster.read_secret(ns, name)
    with pytest.raises(ClusterForbidden, match='cannot list resource "secrets"'):
        cluster._call(cluster.core.list_namespaced_secret, ns)
    with pytest.raises(ClusterForbidden, match='cannot list resource "nodes"'):
        cluster._call(cluster.core.list_node)
    # Patch and delete are granted on Secrets, but the admission guard refuses objects the portal did not create:
    # an apply would otherwise answer with the foreign Secret's data.
    claim = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": ns}}
    claim["metadata"]["labels"] = {"app.kubernetes.io/managed-by": "kaito-portal"}
    with pytest.raises(ClusterForbidden, match="only objects it created") as refused:
        cluster.apply(claim, force=True)
    assert "hunter2" not in str(refused.value) and "aHVudGVyMi" not in str(refused.value)
    with pytest.raises(ClusterForbidden, match="only objects it created"):
        cluster.delete("Secret", ns, name)
    kept = k8s.CoreV1Api(k8s_api_client).read_namespaced_secret(name, ns)
    assert base64.b64decode(kept.data["password"]) == b"hunter2-xyz" and not kept.metadata.labels
    # Workspaces: readable everywhere (one cluster-wide watch), writable only in team namespaces.
    workspace = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Workspace",
        "metadata": {"name": "sneaky", "namespace": other, "labels": claim["metadata"]["labels"]},
        "resource": {"instanceType": "Standard_NV36ads_A10_v5", "labelSelector": {"matchLabels": {"a": "b"}}},
        "inference": {"preset": {"name": "phi-3-mini-128k-instruct"}},
    }
    with pytest.raises(
        ClusterForbidden, match=f'cannot patch resource "workspaces" in API group "kaito.sh" in the namespace "{other}"'
    ):
        cluster.apply(workspace)
    assert cluster.get_workspace(other, "sneaky") is None
    # An unlabelled Workspace in a team namespace is refused by the guard, not by RBAC.
    unlabelled = {**workspace, "metadata": {"name": "unlabelled", "namespace": ns}}
    with pytest.raises(ClusterForbidden, match="must carry the label"):
        cluster.apply(unlabelled)
    # Leases only in the portal's own namespace.
    with pytest.raises(ClusterForbidden, match="leases"):
        cluster.get_lease(ns, "kaito-portal-reconciler")


@pytest.mark.parametrize("reads", [False, True])
def test_web_reads_secrets_only_when_enabled(tmp_path, control_plane, k8s_api_client, k8s_namespace, reads):
    team_ns = f"{k8s_namespace[:50]}-t1"
    create_namespaces(k8s_api_client, team_ns)
    rbac = {"create": True, "webReadsSecrets": reads, "serviceProxy": False}
    objects = render(tmp_path, namespace=k8s_namespace, teamNamespaces=[team_ns], rbac=rbac)
    apply_all(
        k8s_api_client, [o for o in objects if o["kind"] in {"ServiceAccount", "Role", "RoleBinding"}], k8s_namespace
    )
    name = foreign_secret(k8s_api_client, team_ns)
    web = as_service_account(control_plane, k8s_namespace, "kp-kaito-portal-web")
    try:
        if reads:
            assert web.read_secret(team_ns, name) == {"password": "hunter2-xyz"}
        else:
            with pytest.raises(ClusterForbidden):
                web.read_secret(team_ns, name)
        # The web never lists or watches Workspaces cluster-wide (the reconciler does).
        with pytest.raises(ClusterForbidden):
            web.list_workspaces()
        assert web.get_workspace(team_ns, "missing") is None  # get in its team namespaces
        assert web.pods(team_ns, "missing") == []
        with pytest.raises(Exception, match=r"not found|NotFound"):  # allowed (404), not forbidden
            web.logs(team_ns, "missing-pod", container="x")
    finally:
        web.close()
