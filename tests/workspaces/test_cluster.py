"""Against the real kube-apiserver with KAITO's CRDs: every manifest the forms make is accepted, and apply works."""

import base64
import json

import pytest
from kubernetes import client as k8s

from tests.workspaces.test_validation import ACCEPTED, payload_for
from workspaces import services
from workspaces.cluster import ClusterInvalid
from workspaces.kaito import manifests as kaito_manifests
from workspaces.models import PendingSecret, Status, WorkspaceRequest
from workspaces.services import workspace as ws

pytestmark = [pytest.mark.cluster, pytest.mark.usefixtures("catalog")]


def checked_objects(requester, payload, team):
    draft_values = {k: v for k, v in payload.items()}
    draft_values["team"] = team
    if "node_selector" in draft_values:
        draft_values["node_selector"] = ",".join(f"{k}={v}" for k, v in draft_values["node_selector"].items())
    if "adapters" in draft_values:
        from workspaces.kaito.spec import Adapter

        draft_values["adapters"] = [
            Adapter(a["name"], a["image"], tuple(a.get("pull_secrets", ()))) for a in draft_values["adapters"]
        ]
    checked = services.request_validate(requester=requester, draft=services.RequestDraft(**draft_values))
    token = payload.get("hf_token") or None
    return kaito_manifests.manifests(checked.spec, hf_token=token, registry=checked.registry)


@pytest.mark.parametrize(("kind", "changes"), ACCEPTED)
def test_every_manifest_the_forms_make_passes_server_side_dry_run(
    cluster, team_ns, team, requester, inference_payload, tuning_payload, kind, changes
):
    payload = payload_for(kind, changes, inference_payload, tuning_payload)
    payload["team"] = team.slug
    for manifest in checked_objects(requester, payload, team):
        accepted = cluster.apply(manifest, dry_run=True)
        assert accepted["metadata"]["name"] == manifest["metadata"]["name"]
    assert cluster.get_workspace(team_ns, payload["name"]) is None  # dry-run persisted nothing


def test_quick_start_tuning_request_and_why_nc6s_v3_is_refused(cluster, team_ns, team, requester, tuning_payload):
    objects = checked_objects(requester, {**tuning_payload, "team": team.slug}, team)
    workspace = cluster.apply(objects[-1], dry_run=True)
    assert workspace["tuning"]["input"]["urls"][0].startswith("https://huggingface.co/datasets/philschmid/dolly")
    assert workspace["resource"]["instanceType"] == "Standard_NV36ads_A10_v5"
    # The API server alone would take the quick start's retired SKU (the CRD has no enum): the portal must refuse it.
    retired = json.loads(json.dumps(objects[-1]))
    retired["resource"]["instanceType"] = "Standard_NC6s_v3"
    assert cluster.apply(retired, dry_run=True)["resource"]["instanceType"] == "Standard_NC6s_v3"
    with pytest.raises(Exception, match="no longer accepted by KAITO"):
        checked_objects(requester, {**tuning_payload, "instance_type": "Standard_NC6s_v3"}, team)


def test_schema_breaking_objects_are_refused_with_the_servers_message(cluster, team_ns):
    bad = {
        "apiVersion": "kaito.sh/v1beta1",
        "kind": "Workspace",
        "metadata": {"name": "bad", "namespace": team_ns},
        "resource": {"count": "two", "labelSelector": {"matchLabels": {"a": "b"}}},
        "inference": {"preset": {"name": "phi-4"}},
    }
    with pytest.raises(ClusterInvalid, match=r"resource\.count"):
        cluster.apply(bad)


def approve(client, requester, approver, payload):
    client.force_login(requester)
    created = client.post("/api/workspaces/", payload, content_type="application/json")
    assert created.status_code == 201, created.json()
    request = WorkspaceRequest.objects.get(pk=created.json()["id"])
    client.force_login(approver)
    with_commit = client.post(f"/api/workspaces/{request.pk}/approve/", {}, content_type="application/json")
    assert with_commit.status_code == 200
    return request


@pytest.mark.django_db(transaction=True)
def test_approval_applies_secret_configmap_and_workspace(
    cluster, team_ns, client, requester, approver, tuning_payload, k8s_api_client
):
    payload = {**tuning_payload, "training_config": "training_config:\n  QuantizationConfig:\n    load_in_4bit: true\n"}
    request = approve(client, requester, approver, payload)
    request.refresh_from_db()
    assert request.status == Status.PROVISIONING and request.applied_at and request.expires_at
    assert not PendingSecret.objects.filter(request=request).exists()  # now only in the cluster
    core = k8s.CoreV1Api(k8s_api_client)
    workspace = cluster.get_workspace(team_ns, "workspace-tuning-phi-3")
    labels = workspace["metadata"]["labels"]
    assert labels["app.kubernetes.io/managed-by"] == "kaito-portal"
    assert labels["kaito-portal/request-id"] == str(request.pk)
    assert workspace["tuning"]["output"] == {
        "image": "myacr.azurecr.io/phi-3-adapter:0.0.1",
        "imagePushSecret": "workspace-tuning-phi-3-push",
    }
    assert workspace["tuning"]["config"] == "workspace-tuning-phi-3-training-config"
    secret = core.read_namespaced_secret("workspace-tuning-phi-3-push", team_ns)
    assert secret.type == "kubernetes.io/dockerconfigjson"
    config = json.loads(base64.b64decode(secret.data[".dockerconfigjson"]))
    auth = config["auths"]["myacr.azurecr.io"]
    assert auth["username"] == "acr-user" and base64.b64decode(auth["auth"]) == b"acr-user:acr-pa55word-xyz"
    assert secret.metadata.owner_references[0].uid == workspace["metadata"]["uid"]
    configmap = core.read_namespaced_config_map("workspace-tuning-phi-3-training-config", team_ns)
    assert "load_in_4bit: true" in configmap.data["training_config.yaml"]
    assert [f.manager for f in secret.metadata.managed_fields] == ["kaito-portal"]
    # Applying again changes nothing and creates nothing new.
    before = cluster.get_workspace(team_ns, "workspace-tuning-phi-3")["metadata"]["resourceVersion"]
    ws.workspace_apply(request_id=request.pk, cluster=cluster)
    assert cluster.get_workspace(team_ns, "workspace-tuning-phi-3")["metadata"]["resourceVersion"] == before
    assert request.events.filter(to_status=Status.PROVISIONING).count() == 1


@pytest.mark.django_db(transaction=True)
def test_kaito_owned_fields_are_not_overwritten(cluster, team_ns, client, requester, approver, inference_payload):
    request = approve(client, requester, approver, inference_payload)
    custom = cluster.custom
    # KAITO's controller adds a finalizer and annotations with its own field manager.
    custom.patch_namespaced_custom_object(
        "kaito.sh",
        "v1beta1",
        team_ns,
        "workspaces",
        "phi-chat",
        {
            "metadata": {
                "finalizers": ["workspace.finalizer.kaito.sh"],
                "annotations": {"workspace.kaito.io/revision": "1"},
            }
        },
        field_manager="workspace-controller",
        _content_type="application/merge-patch+json",
    )
    ws.workspace_apply(request_id=request.pk, cluster=cluster)
    live = cluster.get_workspace(team_ns, "phi-chat")
    assert live["metadata"]["finalizers"] == ["workspace.finalizer.kaito.sh"]
    assert live["metadata"]["annotations"]["workspace.kaito.io/revision"] == "1"
    custom.patch_namespaced_custom_object(
        "kaito.sh",
        "v1beta1",
        team_ns,
        "workspaces",
        "phi-chat",
        {"metadata": {"finalizers": []}},
        _content_type="application/merge-patch+json",
    )
