"""The AKS path with the real Azure SDK against a local ARM stand-in and real API servers (local accounts, Entra ID)."""

import base64
import os
import stat
import time
import uuid

import pytest
import requests
import yaml
from azure.core.credentials import AccessToken
from azure.core.exceptions import ClientAuthenticationError
from kubernetes import client as k8s

from devcluster.arm_standin import API_VERSION, ArmStandin, entra_id_kubeconfig, local_accounts_kubeconfig
from devcluster.controlplane import ControlPlane
from tests.devcluster.conftest import workspace
from workspaces.aks import AksCluster, aks_kubeconfig
from workspaces.cluster import ClusterForbidden, ClusterUnavailable, ConnectionSettings, connect
from workspaces.kaito.spec import MANAGED_BY, MANAGED_BY_LABEL

pytestmark = pytest.mark.cluster

ARM_SCOPE = "https://management.azure.com/.default"
AKS_SCOPE = "6dae42f8-4368-4678-94ff-3960e28e3630/.default"
SUBSCRIPTION = "00000000-1111-2222-3333-444444444444"
TENANT = "72f988bf-0000-0000-0000-000000000000"
RESOURCE_GROUP = "rg-kaito"
LOCAL_CLUSTER, ENTRA_CLUSTER = "aks-local-accounts", "aks-entra"
# Random per run, so nothing but this module's credential can know them.
ARM_TOKEN = f"arm-{uuid.uuid4().hex}"
AKS_TOKEN_1, AKS_TOKEN_2 = f"aks-1-{uuid.uuid4().hex}", f"aks-2-{uuid.uuid4().hex}"
ENTRA_USER = "kaito-portal@contoso.example"
ENTRA_GROUP = "3f1c0c7e-0000-0000-0000-00000000aad1"  # an Entra group object id, as AKS RBAC bindings name them


class RecordingCredential:
    """azure-core TokenCredential: hands out the queued tokens per scope (the last repeats) and records each call."""

    def __init__(self, tokens):
        self.tokens = {scope: list(queue) for scope, queue in tokens.items()}
        self.calls = []

    def get_token(self, *scopes, claims=None, tenant_id=None, enable_cae=False, **kwargs):
        self.calls.append(scopes)
        if len(scopes) != 1 or scopes[0] not in self.tokens:
            raise ClientAuthenticationError(f"the test credential has no token for {scopes}")
        queue = self.tokens[scopes[0]]
        return queue.pop(0) if len(queue) > 1 else queue[0]


def access(token, seconds=3600):
    return AccessToken(token, int(time.time()) + seconds)


def whoami(cluster):
    """Who the API server thinks the connection is (SelfSubjectReview), through the Cluster's own ApiClient."""
    review = k8s.AuthenticationV1Api(cluster.api).create_self_subject_review(
        {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}
    )
    return review.status.user_info


def managed_workspace(name, namespace):
    body = workspace(name, labels={MANAGED_BY_LABEL: MANAGED_BY})
    body["metadata"]["namespace"] = namespace
    return body


@pytest.fixture(scope="module")
def entra_plane(tmp_path_factory):
    """A second API server that accepts two static bearer tokens for one Entra ID identity.

    Both tokens map to the same user and group; the uid column differs only so that a test can ask the
    server which of the two it saw. The group gets cluster-admin, as an AKS admin group binding would.
    """
    folder = tmp_path_factory.mktemp("entra-plane")
    tokens = folder / "tokens.csv"
    tokens.write_text(
        f'{AKS_TOKEN_1},{ENTRA_USER},entra-token-1,"{ENTRA_GROUP}"\n{AKS_TOKEN_2},{ENTRA_USER},entra-token-2,"{ENTRA_GROUP}"\n'
    )
    plane = ControlPlane(extra_apiserver_args=[f"--token-auth-file={tokens}"])
    try:
        plane.start()
    except Exception as err:
        pytest.fail(f"the Entra ID control plane did not start: {err}", pytrace=False)
    try:
        with plane.api_client() as api:
            k8s.RbacAuthorizationV1Api(api).create_cluster_role_binding(
                {
                    "metadata": {"name": "aks-entra-admins"},
                    "roleRef": {
                        "apiGroup": "rbac.authorization.k8s.io",
                        "kind": "ClusterRole",
                        "name": "cluster-admin",
                    },
                    "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": ENTRA_GROUP}],
                }
            )
        yield plane
    finally:
        plane.stop()


@pytest.fixture(scope="module")
def arm(control_plane):
    """The ARM stand-in; it knows one local-accounts cluster, the session's API server."""
    with ArmStandin(accepted_tokens={ARM_TOKEN}) as standin:
        kubeconfig = local_accounts_kubeconfig(
            control_plane.kubeconfig_path, name=LOCAL_CLUSTER, resource_group=RESOURCE_GROUP
        )
        standin.add_cluster(SUBSCRIPTION, RESOURCE_GROUP, LOCAL_CLUSTER, kubeconfig)
        yield standin


@pytest.fixture(scope="module")
def entra_arm(arm, entra_plane):
    """The same stand-in, now also knowing an Entra ID cluster (kubelogin user) whose API server is entra_plane."""
    kubeconfig = entra_id_kubeconfig(
        entra_plane.server, entra_plane.pki.ca_cert, name=ENTRA_CLUSTER, resource_group=RESOURCE_GROUP, tenant_id=TENANT
    )
    arm.add_cluster(SUBSCRIPTION, RESOURCE_GROUP, ENTRA_CLUSTER, kubeconfig)
    return arm


@pytest.fixture
def arm_log(arm):
    """The stand-in's request log, emptied for this test."""
    arm.requests.clear()
    return arm.requests


@pytest.fixture
def no_kubelogin(tmp_path, monkeypatch):
    """A `kubelogin` first on PATH that only leaves a mark: the portal must never run it."""
    folder = tmp_path / "bin"
    folder.mkdir()
    mark = tmp_path / "kubelogin-ran"
    script = folder / "kubelogin"
    script.write_text(f"#!/bin/sh\ntouch {mark}\nexit 1\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{folder}:{os.environ['PATH']}")
    return mark


def settings_for(arm, name, credential, *, resource_group=RESOURCE_GROUP):
    aks = AksCluster(SUBSCRIPTION, resource_group, name, arm_endpoint=arm.url)
    return ConnectionSettings(aks=aks, azure_credential=credential, arm_ca_bundle=str(arm.ca_cert))


@pytest.fixture
def entra_namespace(entra_plane):
    name = f"t-entra-{uuid.uuid4().hex[:8]}"
    with entra_plane.api_client() as api:
        k8s.CoreV1Api(api).create_namespace({"metadata": {"name": name}})
    return name


def expected_credentials_call(name):
    return (
        f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{RESOURCE_GROUP}/providers/Microsoft.ContainerService"
        f"/managedClusters/{name}/listClusterUserCredential"
    )


# --- the SDK call itself ---------------------------------------------------------------------------------


def test_sdk_call_returns_the_local_accounts_kubeconfig(arm, arm_log, control_plane):
    credential = RecordingCredential({ARM_SCOPE: [access(ARM_TOKEN)]})
    aks = AksCluster(SUBSCRIPTION, RESOURCE_GROUP, LOCAL_CLUSTER, arm_endpoint=arm.url)

    kubeconfig, tokens = aks_kubeconfig(aks, credential=credential, connection_verify=str(arm.ca_cert))

    assert tokens is None  # a client certificate needs no Entra ID token
    assert kubeconfig["clusters"][0]["cluster"]["server"] == control_plane.server
    assert kubeconfig["users"][0]["name"] == f"clusterUser_{RESOURCE_GROUP}_{LOCAL_CLUSTER}"
    admin = yaml.safe_load(control_plane.kubeconfig_path.read_text())["users"][0]["user"]
    assert kubeconfig["users"][0]["user"]["client-certificate-data"] == admin["client-certificate-data"]
    assert credential.calls == [(ARM_SCOPE,)]
    [call] = arm_log
    assert (call.method, call.path, call.status) == ("POST", expected_credentials_call(LOCAL_CLUSTER), 200)
    assert call.query == {"api-version": [API_VERSION]}
    assert call.authorization == f"Bearer {ARM_TOKEN}"
    assert call.user_agent.startswith("azsdk-python-mgmt-containerservice/")


def test_sdk_refuses_an_untrusted_arm_certificate(arm, arm_log):
    """Without the stand-in's CA the SDK must not talk to it: TLS verification is really on."""
    credential = RecordingCredential({ARM_SCOPE: [access(ARM_TOKEN)]})
    aks = AksCluster(SUBSCRIPTION, RESOURCE_GROUP, LOCAL_CLUSTER, arm_endpoint=arm.url)
    arm.tls_failures.clear()
    with pytest.raises(ClusterUnavailable) as caught:
        connect(ConnectionSettings(aks=aks, azure_credential=credential))
    assert caught.value.message.startswith("Cannot load the cluster configuration: [SSL: CERTIFICATE_VERIFY_FAILED]")
    assert arm_log == []  # no HTTP request got through
    # The server's thread records the broken-off handshake just after the client gave up.
    deadline = time.monotonic() + 5
    while not arm.tls_failures and time.monotonic() < deadline:
        time.sleep(0.05)
    assert any("UNKNOWN_CA" in failure for failure in arm.tls_failures)  # the SDK, not the server, broke off


# --- local accounts ----------------------------------------------------------------------------------------


def test_local_accounts_cluster_connects_and_serves_workspaces(arm, arm_log, control_plane, k8s_namespace):
    credential = RecordingCredential({ARM_SCOPE: [access(ARM_TOKEN)]})
    cluster = connect(settings_for(arm, LOCAL_CLUSTER, credential))
    try:
        assert cluster.server == control_plane.server
        assert whoami(cluster).username == "admin"  # the client certificate from the AKS kubeconfig
        applied = cluster.apply(managed_workspace("phi-aks-local", k8s_namespace))
        assert applied["metadata"]["uid"]
        fetched = cluster.get_workspace(k8s_namespace, "phi-aks-local")
        assert fetched["metadata"]["uid"] == applied["metadata"]["uid"]
        assert fetched["inference"]["preset"]["name"] == "phi-4-mini-instruct"
        assert fetched["metadata"]["managedFields"][0]["manager"] == "kaito-portal"
    finally:
        cluster.close()
    assert credential.calls == [(ARM_SCOPE,)]  # no Entra ID token for a local-accounts cluster
    assert [(r.path, r.authorization, r.status) for r in arm_log] == [
        (expected_credentials_call(LOCAL_CLUSTER), f"Bearer {ARM_TOKEN}", 200)
    ]


# --- Entra ID --------------------------------------------------------------------------------------------


def test_entra_id_cluster_uses_the_credentials_token_instead_of_kubelogin(
    entra_arm, arm_log, entra_plane, entra_namespace, no_kubelogin
):
    credential = RecordingCredential({ARM_SCOPE: [access(ARM_TOKEN)], AKS_SCOPE: [access(AKS_TOKEN_1)]})
    cluster = connect(settings_for(entra_arm, ENTRA_CLUSTER, credential))
    try:
        assert cluster.server == entra_plane.server
        me = whoami(cluster)
        assert (me.username, me.uid, me.groups) == (ENTRA_USER, "entra-token-1", [ENTRA_GROUP, "system:authenticated"])
        cluster.apply(managed_workspace("phi-aks-entra", entra_namespace))
        assert cluster.get_workspace(entra_namespace, "phi-aks-entra")["metadata"]["namespace"] == entra_namespace
        items, _ = cluster.list_workspaces()
        assert [w["metadata"]["name"] for w in items if w["metadata"]["namespace"] == entra_namespace] == [
            "phi-aks-entra"
        ]
        # The service proxy to the model is called outside the client: it must carry the same token.
        endpoint = cluster.inference_endpoint(entra_namespace, "phi-aks-entra")
        assert endpoint.headers == {"Authorization": f"Bearer {AKS_TOKEN_1}"}
    finally:
        cluster.close()
    assert not no_kubelogin.exists()
    # One ARM token for the credentials call, then one AKS token, cached across all the calls above.
    assert credential.calls == [(ARM_SCOPE,), (AKS_SCOPE,)]
    assert [r.authorization for r in arm_log] == [f"Bearer {ARM_TOKEN}"]


def test_entra_id_token_is_refreshed_before_it_expires(entra_arm, entra_plane, entra_namespace, no_kubelogin):
    # The first token has 304 s left: good now, due for refresh 4 s from now (AksTokenSource keeps a 300 s margin).
    first = access(AKS_TOKEN_1, seconds=304)
    credential = RecordingCredential({ARM_SCOPE: [access(ARM_TOKEN)], AKS_SCOPE: [first, access(AKS_TOKEN_2)]})
    cluster = connect(settings_for(entra_arm, ENTRA_CLUSTER, credential))
    try:
        assert whoami(cluster).uid == "entra-token-1"
        time.sleep(max(0.0, first.expires_on - 300 - time.time()) + 0.5)
        assert whoami(cluster).uid == "entra-token-2"
        cluster.apply(managed_workspace("phi-refreshed", entra_namespace))
        assert cluster.get_workspace(entra_namespace, "phi-refreshed") is not None
        assert cluster.inference_endpoint(entra_namespace, "phi-refreshed").headers == {
            "Authorization": f"Bearer {AKS_TOKEN_2}"
        }
    finally:
        cluster.close()
    assert credential.calls == [(ARM_SCOPE,), (AKS_SCOPE,), (AKS_SCOPE,)]
    assert not no_kubelogin.exists()


def test_entra_id_token_the_api_server_does_not_know_is_forbidden(entra_arm, entra_plane, no_kubelogin):
    credential = RecordingCredential({ARM_SCOPE: [access(ARM_TOKEN)], AKS_SCOPE: [access("not-a-known-aks-token")]})
    cluster = connect(settings_for(entra_arm, ENTRA_CLUSTER, credential))
    try:
        with pytest.raises(ClusterForbidden) as caught:
            cluster.get_workspace("default", "anything")
    finally:
        cluster.close()
    assert caught.value.status == 401


# --- ARM errors ------------------------------------------------------------------------------------------


def test_wrong_arm_token_is_a_one_line_forbidden_error(arm, arm_log):
    credential = RecordingCredential({ARM_SCOPE: [access("a-token-arm-never-issued")]})
    with pytest.raises(ClusterForbidden) as caught:
        connect(settings_for(arm, LOCAL_CLUSTER, credential))
    assert caught.value.message == (
        f"Azure refused the credentials of AKS cluster {LOCAL_CLUSTER} (resource group {RESOURCE_GROUP}, "
        f"subscription {SUBSCRIPTION}): InvalidAuthenticationToken: The access token is invalid."
    )
    assert caught.value.status == 401
    assert [(r.authorization, r.status) for r in arm_log] == [("Bearer a-token-arm-never-issued", 401)]


def test_credential_failure_keeps_the_credentials_own_explanation(arm, arm_log):
    credential = RecordingCredential({})  # like DefaultAzureCredential with no Azure identity available
    with pytest.raises(ClusterUnavailable) as caught:
        connect(settings_for(arm, LOCAL_CLUSTER, credential))
    assert caught.value.message == (
        f"Cannot load the cluster configuration: the test credential has no token for ('{ARM_SCOPE}',)"
    )
    assert arm_log == []


@pytest.mark.parametrize(
    ("resource_group", "name", "code"),
    [
        (RESOURCE_GROUP, "aks-nobody-made", "ResourceNotFound"),
        ("rg-nobody-made", LOCAL_CLUSTER, "ResourceGroupNotFound"),
    ],
)
def test_unknown_cluster_names_the_cluster(arm, arm_log, resource_group, name, code):
    credential = RecordingCredential({ARM_SCOPE: [access(ARM_TOKEN)]})
    with pytest.raises(ClusterUnavailable) as caught:
        connect(settings_for(arm, name, credential, resource_group=resource_group))
    message = caught.value.message
    assert message.startswith(f"Azure refused the credentials of AKS cluster {name} (resource group {resource_group}, ")
    assert f": {code}: " in message
    assert "\n" not in message
    assert caught.value.status == 404
    assert [r.status for r in arm_log] == [404]


# --- the stand-in is strict, so the tests above mean something -------------------------------------------------


def test_standin_refuses_what_arm_refuses(arm):
    url = arm.url + expected_credentials_call(LOCAL_CLUSTER)
    verify = str(arm.ca_cert)
    good = {"Authorization": f"Bearer {ARM_TOKEN}"}

    missing = requests.post(url, params={"api-version": API_VERSION}, verify=verify, timeout=5)
    assert (missing.status_code, missing.json()["error"]["code"]) == (401, "AuthenticationFailed")
    old_api = requests.post(url, params={"api-version": "2024-01-01"}, headers=good, verify=verify, timeout=5)
    assert (old_api.status_code, old_api.json()["error"]["code"]) == (400, "NoRegisteredProviderFound")
    as_get = requests.get(url, params={"api-version": API_VERSION}, headers=good, verify=verify, timeout=5)
    assert (as_get.status_code, as_get.json()["error"]["code"]) == (404, "InvalidResourceType")
    ok = requests.post(url, params={"api-version": API_VERSION}, headers=good, verify=verify, timeout=5)
    [entry] = ok.json()["kubeconfigs"]
    assert entry["name"] == "clusterUser"
    assert yaml.safe_load(base64.b64decode(entry["value"]))["current-context"] == LOCAL_CLUSTER
