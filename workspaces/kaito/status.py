"""What KAITO reports, in the portal's terms: status.state and conditions (v0.12 and older) plus Events."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

# Condition types, in the order a Workspace meets them (api/v1beta1/condition_types.go).
CONDITION_ORDER = [
    "NodeClaimReady",
    "NodesReady",
    "ResourceReady",
    "ModelMirrorReady",
    "InferenceReady",
    "JobStarted",
    "BenchmarkCompleted",
    "WorkspaceSucceeded",
    "WorkspaceReady",
]
INFERENCE_FAILURES = {
    "ImagePullError": "an image cannot be pulled",
    "ContainerCrashLoopBackOff": "the model server keeps crashing",
    "ContainerOOMKilled": "the model server ran out of memory",
    "ContainerStartError": "the model server container cannot start",
    "PodEvicted": "the model pod was evicted",
    "NodeDiskPressure": "the GPU node is out of disk space",
    "NodeMemoryPressure": "the GPU node is out of memory",
    "Unschedulable": "the model pod cannot be scheduled on any node",
    "SASTokenFetchFailed": "the weights storage token cannot be fetched",
    "ModelStreamingStorageClassNotFound": "the model streaming storage class is missing",
    "ModelStreamingInvalidStorageClass": "the model streaming storage class is invalid",
    "ModelStreamingServiceAccountInvalid": "the model streaming service account is invalid",
    "ModelStreamingInvalidAnnotations": "the model streaming annotations are invalid",
    "ModelMirrorCreateFailed": "the model mirror cannot be created",
}
WAITING = {
    "NodeClaimReady": "Waiting for KAITO to provision the GPU node",
    "NodesReady": "Waiting for the GPU nodes to become ready",
    "ResourceReady": "Waiting for GPU nodes",
    "ModelMirrorReady": "Waiting for the model mirror",
    "InferenceReady": "The model server is starting (downloading the weights and loading the model)",
    "JobStarted": "Waiting for the tuning job to start",
    "BenchmarkCompleted": "The model is loaded; KAITO is measuring its throughput",
    "WorkspaceSucceeded": "Waiting for the workspace to finish",
    "WorkspaceReady": "Waiting for the workspace to become ready",
}
# Warning Events worth telling the user, most specific first: (pattern on reason + message, what it means).
EVENT_PATTERNS = [
    (re.compile(r"quota", re.I), "the cloud GPU quota is exhausted"),
    (re.compile(r"OOMKilled|out of memory", re.I), "a container ran out of memory"),
    (
        re.compile(r"ErrImagePull|ImagePullBackOff|Failed to pull image|pull access denied", re.I),
        "an image cannot be pulled",
    ),
    (
        re.compile(r"FailedScheduling|Unschedulable|didn't match|Insufficient nvidia", re.I),
        "no node can run the pod yet",
    ),
    (re.compile(r"BackOff|CrashLoop", re.I), "a container keeps crashing"),
    (
        re.compile(r"FailedCreate|ProvisioningFailed|LaunchFailed|InsufficientCapacity", re.I),
        "the cloud could not create the node",
    ),
]


@dataclass(frozen=True)
class Observed:
    status: str  # a workspaces.models.Status value
    message: str
    kaito_state: str = ""
    conditions: list[dict[str, str]] = field(default_factory=list)
    target_node_count: int | None = None
    worker_nodes: list[str] = field(default_factory=list)
    performance: dict[str, Any] = field(default_factory=dict)


def _conditions(cr: Mapping[str, Any]) -> dict[str, dict[str, str]]:
    items = (cr.get("status") or {}).get("conditions") or []
    return {c.get("type", ""): c for c in items if isinstance(c, Mapping)}


def _is(conditions: Mapping[str, Mapping[str, str]], kind: str, value: str = "True") -> bool:
    return conditions.get(kind, {}).get("status") == value


def _first_unmet(conditions: Mapping[str, Mapping[str, str]]) -> Mapping[str, str] | None:
    for kind in CONDITION_ORDER:
        condition = conditions.get(kind)
        if condition is not None and condition.get("status") != "True":
            return condition
    return None


def _event_time(event: Mapping[str, Any]) -> str:
    return str(event.get("lastTimestamp") or event.get("eventTime") or event.get("firstTimestamp") or "")


def explain_events(events: Iterable[Mapping[str, Any]]) -> str:
    """The most telling recent Warning event, as 'what it means: what it says (on which object)'."""
    warnings = sorted((e for e in events if e.get("type") == "Warning"), key=_event_time, reverse=True)
    for pattern, meaning in EVENT_PATTERNS:
        for event in warnings:
            text = f"{event.get('reason', '')} {event.get('message', '')}"
            if pattern.search(text):
                involved = event.get("involvedObject") or {}
                where = f" ({involved.get('kind', '').lower()} {involved.get('name', '')})" if involved else ""
                return f"{meaning}: {event.get('message', '').strip()}{where}"
    return ""


def _kind(cr: Mapping[str, Any]) -> str:
    return "tuning" if cr.get("tuning") else "inference"


def _status_for(cr: Mapping[str, Any], conditions: Mapping[str, Mapping[str, str]]) -> str:
    state = (cr.get("status") or {}).get("state", "")
    kind = _kind(cr)
    failure = conditions.get("InferenceReady", {}).get("reason") in INFERENCE_FAILURES and not _is(
        conditions, "InferenceReady"
    )
    if state:  # v1beta1, KAITO >= 0.5
        return {
            "Ready": "READY",
            "Running": "RUNNING",
            "Succeeded": "SUCCEEDED" if kind == "tuning" else "READY",
            "Failed": "FAILED",
            "NotReady": "FAILED" if failure else "PROVISIONING",
        }.get(state, "FAILED" if failure else "PROVISIONING")
    # Older KAITO and kaito.sh/v1alpha1 objects carry only conditions.
    if kind == "tuning":
        if _is(conditions, "WorkspaceSucceeded"):
            return "SUCCEEDED"
        reasons = {conditions.get(k, {}).get("reason", "") for k in ("JobStarted", "WorkspaceSucceeded")}
        if reasons & {"WorkspaceTuningJobStatusFailed", "workspaceFailed"}:
            return "FAILED"
        return "RUNNING" if _is(conditions, "JobStarted") else "PROVISIONING"
    if _is(conditions, "WorkspaceSucceeded") or _is(conditions, "WorkspaceReady"):
        return "READY"
    return "FAILED" if failure else "PROVISIONING"


def _sentence(status: str, cr: Mapping[str, Any], conditions: Mapping[str, Mapping[str, str]]) -> str:
    kind = _kind(cr)
    if status == "READY":
        return "The model is ready to chat."
    if status == "SUCCEEDED":
        output = (cr.get("tuning") or {}).get("output") or {}
        where = f" and the adapter was pushed to {output['image']}" if output.get("image") else ""
        return f"Tuning finished{where}."
    if status == "RUNNING":
        return "The tuning job is running."
    unmet = _first_unmet(conditions)
    if status == "FAILED":
        reason = (unmet or {}).get("reason", "")
        what = INFERENCE_FAILURES.get(reason) or ("the tuning job failed" if kind == "tuning" else "KAITO failed")
        detail = (unmet or {}).get("message", "")
        return f"Failed: {what}" + (f" ({detail})" if detail else "") + "."
    if unmet is None:
        return "Waiting for KAITO to pick up the workspace."
    text = WAITING.get(unmet.get("type", ""), "Waiting for KAITO")
    reason, detail = unmet.get("reason", ""), unmet.get("message", "")
    if unmet.get("type") == "NodeClaimReady" and (cr.get("resource") or {}).get("instanceType"):
        text = f"Waiting for a GPU node ({cr['resource']['instanceType']})"
    if detail:
        text += f": {detail}"
    elif reason:
        text += f" ({reason})"
    return text


def observed_state(cr: Mapping[str, Any], events: Iterable[Mapping[str, Any]] = ()) -> Observed:
    """Map a Workspace (and Events about it, its pods or its Job) to a portal status and one plain sentence."""
    status_block = cr.get("status") or {}
    conditions = _conditions(cr)
    metadata = cr.get("metadata") or {}
    if metadata.get("deletionTimestamp") or _is(conditions, "WorkspaceDeleting"):
        status, message = "DELETING", "KAITO is deleting the workspace and releasing its GPU nodes."
    else:
        status = _status_for(cr, conditions)
        message = _sentence(status, cr, conditions)
        if status in ("PROVISIONING", "FAILED", "RUNNING"):
            detail = explain_events(events)
            if detail:
                message = f"{message.rstrip('.')} — {detail}"
    metrics = (status_block.get("performance") or {}).get("metrics") or {}
    return Observed(
        status=status,
        message=message,
        kaito_state=status_block.get("state", ""),
        conditions=[
            {k: str(c.get(k, "")) for k in ("type", "status", "reason", "message", "lastTransitionTime")}
            for c in status_block.get("conditions") or []
        ],
        target_node_count=status_block.get("targetNodeCount"),
        worker_nodes=list(status_block.get("workerNodes") or []),
        performance=dict(metrics),
    )
