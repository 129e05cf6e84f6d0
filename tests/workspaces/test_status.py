"""observed_state: KAITO v0.12 states and conditions, older conditions, v1alpha1 objects, and Events."""

import pytest

from workspaces.kaito.status import explain_events, observed_state


def cond(kind, status, reason="", message=""):
    return {
        "type": kind,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": "2026-11-28T10:00:00Z",
    }


def inference(state=None, conditions=(), **status):
    body = {"conditions": list(conditions), **status}
    if state:
        body["state"] = state
    return {
        "apiVersion": "kaito.sh/v1beta1",
        "kind": "Workspace",
        "metadata": {"name": "ws", "namespace": "ns"},
        "resource": {"instanceType": "Standard_NC24ads_A100_v4"},
        "inference": {"preset": {"name": "phi-4"}},
        "status": body,
    }


def tuning(state=None, conditions=()):
    cr = inference(state, conditions)
    del cr["inference"]
    cr["tuning"] = {"method": "qlora", "output": {"image": "myacr.azurecr.io/a:1", "imagePushSecret": "s"}}
    return cr


PENDING_NODE = cond("NodeClaimReady", "False", "NodeClaimNotReady", "nodeclaim ws-abc is not ready")
RESOURCE_OK = [
    cond("NodeClaimReady", "True", "NodeClaimsReady"),
    cond("NodesReady", "True", "NodesReady"),
    cond("ResourceReady", "True", "workspaceResourceStatusSuccess"),
]

CASES = [
    ("fresh", inference(), "PROVISIONING", "Waiting for KAITO to pick up"),
    (
        "node pending",
        inference("Pending", [PENDING_NODE]),
        "PROVISIONING",
        "Waiting for a GPU node (Standard_NC24ads_A100_v4): nodeclaim ws-abc is not ready",
    ),
    (
        "model loading",
        inference("Pending", [*RESOURCE_OK, cond("InferenceReady", "False", "WorkspaceInferenceStatusPending")]),
        "PROVISIONING",
        "The model server is starting",
    ),
    (
        "benchmark",
        inference(
            "Pending",
            [
                *RESOURCE_OK,
                cond("InferenceReady", "True", "WorkspaceInferenceStatusSuccess"),
                cond("BenchmarkCompleted", "False", "BenchmarkPending"),
            ],
        ),
        "PROVISIONING",
        "measuring its throughput",
    ),
    (
        "ready",
        inference(
            "Ready",
            [*RESOURCE_OK, cond("InferenceReady", "True"), cond("WorkspaceSucceeded", "True", "workspaceSucceeded")],
        ),
        "READY",
        "ready to chat",
    ),
    (
        "not ready, crashing",
        inference(
            "NotReady", [*RESOURCE_OK, cond("InferenceReady", "False", "ContainerCrashLoopBackOff", "back-off 5m")]
        ),
        "FAILED",
        "the model server keeps crashing (back-off 5m)",
    ),
    (
        "not ready, transient",
        inference("NotReady", [*RESOURCE_OK, cond("InferenceReady", "False", "WorkspaceInferenceStatusPending")]),
        "PROVISIONING",
        "The model server is starting",
    ),
    (
        "oom",
        inference("Pending", [*RESOURCE_OK, cond("InferenceReady", "False", "ContainerOOMKilled")]),
        "FAILED",
        "ran out of memory",
    ),
    (
        "tuning pending",
        tuning("Pending", [*RESOURCE_OK, cond("JobStarted", "False", "WorkspaceTuningJobStatusPending")]),
        "PROVISIONING",
        "Waiting for the tuning job to start",
    ),
    (
        "tuning running",
        tuning("Running", [*RESOURCE_OK, cond("JobStarted", "True", "WorkspaceTuningJobStatusStarted")]),
        "RUNNING",
        "running",
    ),
    (
        "tuning succeeded",
        tuning("Succeeded", [cond("WorkspaceSucceeded", "True", "workspaceSucceeded")]),
        "SUCCEEDED",
        "pushed to myacr.azurecr.io/a:1",
    ),
    (
        "tuning failed",
        tuning(
            "Failed",
            [
                cond("JobStarted", "False", "WorkspaceTuningJobStatusFailed", "job failed"),
                cond("WorkspaceSucceeded", "False", "workspaceFailed"),
            ],
        ),
        "FAILED",
        "the tuning job failed (job failed)",
    ),
    # KAITO before status.state (v0.4): conditions only, including the old WorkspaceReady.
    (
        "old ready",
        inference(
            None, [cond("ResourceReady", "True"), cond("InferenceReady", "True"), cond("WorkspaceReady", "True")]
        ),
        "READY",
        "ready",
    ),
    ("old tuning started", tuning(None, [cond("JobStarted", "True")]), "RUNNING", "running"),
    (
        "old tuning failed",
        tuning(None, [cond("JobStarted", "False", "WorkspaceTuningJobStatusFailed")]),
        "FAILED",
        "failed",
    ),
    (
        "deleting",
        {**inference("Ready"), "metadata": {"name": "ws", "deletionTimestamp": "2026-11-28T11:00:00Z"}},
        "DELETING",
        "deleting",
    ),
    (
        "deleting condition",
        inference("Ready", [cond("WorkspaceDeleting", "True", "workspaceDeleted")]),
        "DELETING",
        "deleting",
    ),
]


@pytest.mark.parametrize(("label", "cr", "status", "text"), CASES, ids=[c[0] for c in CASES])
def test_observed_state(label, cr, status, text):
    observed = observed_state(cr)
    assert observed.status == status
    assert text in observed.message


def test_v1alpha1_object_is_read_by_its_conditions():
    cr = inference(None, [cond("WorkspaceSucceeded", "True")])
    cr["apiVersion"] = "kaito.sh/v1alpha1"
    assert observed_state(cr).status == "READY"


def test_status_details_are_kept():
    metrics = {"peakTokensPerMinute": {"value": "48000", "unit": "tokens/min", "description": "peak"}}
    cr = inference(
        "Ready",
        [cond("WorkspaceSucceeded", "True")],
        targetNodeCount=2,
        workerNodes=["aks-ws-1", "aks-ws-2"],
        performance={"metrics": metrics},
    )
    observed = observed_state(cr)
    assert observed.target_node_count == 2
    assert observed.worker_nodes == ["aks-ws-1", "aks-ws-2"]
    assert observed.performance["peakTokensPerMinute"]["value"] == "48000"
    assert observed.kaito_state == "Ready"
    assert observed.conditions[0]["type"] == "WorkspaceSucceeded"


def event(reason, message, kind="Pod", name="ws-0", time="2026-11-28T10:05:00Z", type_="Warning"):
    return {
        "type": type_,
        "reason": reason,
        "message": message,
        "lastTimestamp": time,
        "involvedObject": {"kind": kind, "name": name},
    }


@pytest.mark.parametrize(
    ("events", "expected"),
    [
        (
            [
                event(
                    "ProvisioningFailed",
                    "QuotaExceeded: Operation could not be completed as it results in exceeding "
                    "approved standardNCADSA100v4Family Cores quota",
                    kind="NodeClaim",
                    name="ws-abc",
                )
            ],
            "the cloud GPU quota is exhausted: QuotaExceeded: Operation could not be completed",
        ),
        (
            [
                event("Failed", 'Failed to pull image "myacr.azurecr.io/x:1": unauthorized'),
                event("BackOff", "Back-off pulling image"),
            ],
            "an image cannot be pulled: Failed to pull image",
        ),
        (
            [event("FailedScheduling", "0/3 nodes are available: 3 Insufficient nvidia.com/gpu.")],
            "no node can run the pod yet: 0/3 nodes are available",
        ),
        ([event("BackOff", "Back-off restarting failed container ws in pod ws-0")], "a container keeps crashing"),
        ([event("Killing", "Container ws exceeded memory; OOMKilled")], "a container ran out of memory"),
        ([event("Pulled", "Successfully pulled image", type_="Normal")], ""),
    ],
)
def test_events_are_explained(events, expected):
    text = explain_events(events)
    assert text.startswith(expected) if expected else text == ""


def test_event_explanation_joins_the_status_sentence():
    cr = inference("Pending", [PENDING_NODE])
    quota = event(
        "ProvisioningFailed",
        "exceeding approved Standard NCADS_A100_v4 Family vCPUs quota in eastus",
        kind="NodeClaim",
        name="ws-abc",
    )
    observed = observed_state(cr, [quota])
    assert observed.status == "PROVISIONING"
    assert observed.message == (
        "Waiting for a GPU node (Standard_NC24ads_A100_v4): nodeclaim ws-abc is not ready — the cloud GPU quota is "
        "exhausted: exceeding approved Standard NCADS_A100_v4 Family vCPUs quota in eastus (nodeclaim ws-abc)"
    )
