"""Workspace CRUD, status subresource, dry-run and v1alpha1 reads against the real apiserver."""

import json

import pytest
from kubernetes import client

from tests.devcluster.conftest import GROUP, PLURAL, VERSION, workspace

pytestmark = pytest.mark.cluster


def test_create_get_list_with_selector_patch_delete(custom, k8s_namespace):
    ns = k8s_namespace
    created = custom.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, workspace("ws-a", {"team": "a"}))
    custom.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, workspace("ws-b", {"team": "b"}))
    assert created["metadata"]["uid"]
    assert created["metadata"]["generation"] == 1
    # The CRD default (accessMode: public) was applied by the apiserver, not by us.
    assert created["inference"]["preset"]["accessMode"] == "public"

    got = custom.get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, "ws-a")
    assert got["resource"]["labelSelector"] == {"matchLabels": {"apps": "ws-a"}}
    assert got["metadata"]["resourceVersion"] == created["metadata"]["resourceVersion"]

    listed = custom.list_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, label_selector="team=b")
    assert [i["metadata"]["name"] for i in listed["items"]] == ["ws-b"]
    everything = custom.list_namespaced_custom_object(GROUP, VERSION, ns, PLURAL)
    assert sorted(i["metadata"]["name"] for i in everything["items"]) == ["ws-a", "ws-b"]

    patched = custom.patch_namespaced_custom_object(
        GROUP, VERSION, ns, PLURAL, "ws-a", {"metadata": {"annotations": {"kaito.sh/enablelb": "True"}}}
    )
    assert patched["metadata"]["annotations"] == {"kaito.sh/enablelb": "True"}
    assert patched["metadata"]["generation"] == 1  # metadata changes do not bump generation
    patched = custom.patch_namespaced_custom_object(
        GROUP, VERSION, ns, PLURAL, "ws-a", {"inference": {"config": "my-inference-config"}}
    )
    assert patched["metadata"]["generation"] == 2
    assert int(patched["metadata"]["resourceVersion"]) > int(created["metadata"]["resourceVersion"])

    custom.delete_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, "ws-a")
    with pytest.raises(client.ApiException) as gone:
        custom.get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, "ws-a")
    assert gone.value.status == 404
    remaining = custom.list_namespaced_custom_object(GROUP, VERSION, ns, PLURAL)
    assert [i["metadata"]["name"] for i in remaining["items"]] == ["ws-b"]


def test_update_with_stale_resource_version_conflicts(custom, k8s_namespace):
    ns = k8s_namespace
    first = custom.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, workspace("ws-conflict"))
    custom.patch_namespaced_custom_object(
        GROUP, VERSION, ns, PLURAL, "ws-conflict", {"metadata": {"labels": {"x": "1"}}}
    )
    with pytest.raises(client.ApiException) as conflict:
        custom.replace_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, "ws-conflict", first)
    assert conflict.value.status == 409
    assert "the object has been modified" in json.loads(conflict.value.body)["message"]


def test_status_subresource(custom, k8s_namespace):
    ns = k8s_namespace
    custom.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, workspace("ws-status"))
    condition = {
        "type": "ResourceReady",
        "status": "True",
        "reason": "workspaceResourceStatusSuccess",
        "message": "nodes are ready",
        "lastTransitionTime": "2026-11-28T12:00:00Z",
    }
    updated = custom.patch_namespaced_custom_object_status(
        GROUP, VERSION, ns, PLURAL, "ws-status", {"status": {"state": "Pending", "conditions": [condition]}}
    )
    assert updated["status"]["state"] == "Pending"
    assert updated["status"]["conditions"][0]["reason"] == "workspaceResourceStatusSuccess"
    assert updated["metadata"]["generation"] == 1  # status writes never bump generation

    # Writing status through the main resource is silently dropped: status has its own endpoint.
    via_main = custom.patch_namespaced_custom_object(
        GROUP, VERSION, ns, PLURAL, "ws-status", {"status": {"state": "Ready"}, "metadata": {"labels": {"y": "1"}}}
    )
    assert via_main["status"]["state"] == "Pending"
    assert via_main["metadata"]["labels"] == {"y": "1"}

    # ...and spec changes through /status are dropped too.
    via_status = custom.patch_namespaced_custom_object_status(
        GROUP, VERSION, ns, PLURAL, "ws-status", {"inference": {"config": "ignored"}, "status": {"state": "Ready"}}
    )
    assert via_status["status"]["state"] == "Ready"
    assert "config" not in via_status["inference"]

    # A status that breaks the schema is refused.
    with pytest.raises(client.ApiException) as bad:
        custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, ns, PLURAL, "ws-status", {"status": {"targetNodeCount": "many"}}
        )
    assert bad.value.status == 422


def test_server_side_dry_run_does_not_persist(custom, k8s_namespace):
    ns = k8s_namespace
    dry = custom.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, workspace("ws-dry"), dry_run="All")
    assert dry["metadata"]["name"] == "ws-dry"
    assert dry["inference"]["preset"]["accessMode"] == "public"  # defaulting ran
    with pytest.raises(client.ApiException) as missing:
        custom.get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, "ws-dry")
    assert missing.value.status == 404

    # Dry-run still validates: an invalid object is refused without being stored.
    bad = workspace("ws-dry-bad")
    bad["resource"] = {"count": 1}
    with pytest.raises(client.ApiException) as refused:
        custom.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, bad, dry_run="All")
    assert refused.value.status == 422


def test_v1beta1_object_is_readable_as_v1alpha1(custom, k8s_namespace):
    ns = k8s_namespace
    body = workspace("ws-versions")
    body["resource"]["partition"] = {"mode": "mig", "profile": "1g.10gb"}  # a v1beta1-only field
    custom.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, body)

    old = custom.get_namespaced_custom_object(GROUP, "v1alpha1", ns, PLURAL, "ws-versions")
    assert old["apiVersion"] == "kaito.sh/v1alpha1"
    assert old["inference"]["preset"]["name"] == "phi-4-mini-instruct"
    assert old["resource"]["instanceType"] == "Standard_NC24ads_A100_v4"
    # Reading through v1alpha1 prunes fields its schema lacks (conversion strategy None + pruning)...
    assert "partition" not in old["resource"]
    new = custom.get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, "ws-versions")
    assert new["resource"]["partition"] == {"mode": "mig", "profile": "1g.10gb"}

    listed = custom.list_namespaced_custom_object(GROUP, "v1alpha1", ns, PLURAL)
    assert [i["metadata"]["name"] for i in listed["items"]] == ["ws-versions"]

    # ...so a read-modify-write through v1alpha1 silently loses v1beta1-only fields: always use v1beta1.
    old["metadata"].setdefault("labels", {})["touched"] = "v1alpha1"
    custom.replace_namespaced_custom_object(GROUP, "v1alpha1", ns, PLURAL, "ws-versions", old)
    after = custom.get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, "ws-versions")
    assert after["metadata"]["labels"]["touched"] == "v1alpha1"
    assert "partition" not in after["resource"]


def test_v1alpha1_create_applies_its_own_defaults(custom, k8s_namespace):
    ns = k8s_namespace
    body = workspace("ws-alpha")
    body["apiVersion"] = "kaito.sh/v1alpha1"
    del body["resource"]["instanceType"]
    custom.create_namespaced_custom_object(GROUP, "v1alpha1", ns, PLURAL, body)
    stored = custom.get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, "ws-alpha")
    assert stored["apiVersion"] == "kaito.sh/v1beta1"
    assert stored["resource"]["instanceType"] == "Standard_NC24ads_A100_v4"  # v1alpha1's CRD default
