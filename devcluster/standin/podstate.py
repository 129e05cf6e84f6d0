"""Pod statuses and Events shaped like the ones the kubelet, the scheduler and the Job/StatefulSet controllers write."""

from __future__ import annotations

from typing import Any

from devcluster.standin.kaito_logic import now_rfc3339
from devcluster.standin.manifests import PLAYED_BY, STANDIN, digest

Obj = dict[str, Any]
COMPONENTS = {  # reason source -> (source.component, reportingComponent)
    "kubelet": ("kubelet", "kubelet"),
    "scheduler": ("default-scheduler", "default-scheduler"),
    "job": ("job-controller", "job-controller"),
    "statefulset": ("statefulset-controller", "statefulset-controller"),
    "kaito": ("workspace-controller", "workspace-controller"),
}


def _container_id(pod: Obj, name: str, attempt: int = 0) -> str:
    return "containerd://" + digest(pod["metadata"].get("uid", ""), name, str(attempt), size=64)


def _image_id(image: str) -> str:
    return image.split(":")[0] + "@sha256:" + digest(image, size=64)


def container(
    pod: Obj, spec: Obj, state: Obj, *, ready: bool = False, restarts: int = 0, last: Obj | None = None
) -> Obj:
    """One containerStatuses entry; `state` is {"waiting"|"running"|"terminated": {...}}."""
    status: Obj = {
        "name": spec["name"],
        "image": spec["image"],
        "imageID": "" if "waiting" in state else _image_id(spec["image"]),
        "ready": ready,
        "restartCount": restarts,
        "started": "running" in state,
        "state": state,
        "lastState": {"terminated": last} if last else {},
    }
    if "waiting" not in state:
        status["containerID"] = _container_id(pod, spec["name"], restarts)
    return status


def waiting(reason: str, message: str = "") -> Obj:
    return {"waiting": {"reason": reason, **({"message": message} if message else {})}}


def running(started: str) -> Obj:
    return {"running": {"startedAt": started}}


def terminated(pod: Obj, name: str, reason: str, code: int, started: str, finished: str, attempt: int = 0) -> Obj:
    return {
        "terminated": {
            "exitCode": code,
            "reason": reason,
            "startedAt": started,
            "finishedAt": finished,
            "containerID": _container_id(pod, name, attempt),
        }
    }


def pod_conditions(*, scheduled: bool, initialized: bool, ready: bool, unschedulable: str = "") -> list[Obj]:
    now = now_rfc3339()

    def cond(ctype: str, ok: bool, reason: str = "") -> Obj:
        out = {"type": ctype, "status": "True" if ok else "False", "lastTransitionTime": now, "lastProbeTime": None}
        return {**out, "reason": reason} if reason else out

    if unschedulable:
        return [{**cond("PodScheduled", False, "Unschedulable"), "message": unschedulable}]
    not_ready = "" if ready else "ContainersNotReady"
    return [
        cond("PodReadyToStartContainers", scheduled),
        cond("Initialized", initialized, "" if initialized else "ContainersNotInitialized"),
        cond("Ready", ready, not_ready),
        cond("ContainersReady", ready, not_ready),
        cond("PodScheduled", scheduled),
    ]


def event(
    involved: Obj,
    kind: str,
    api_version: str,
    etype: str,
    reason: str,
    message: str,
    source: str,
    *,
    host: str = "",
    field_path: str = "",
) -> Obj:
    """A core/v1 Event about `involved`; its name is derived from the content so a replayed step adds no duplicate."""
    meta = involved["metadata"]
    namespace = meta.get("namespace") or "default"  # events about cluster-scoped objects (Nodes) live in default
    now = now_rfc3339()
    component, reporting = COMPONENTS[source]
    obj_ref: Obj = {"apiVersion": api_version, "kind": kind, "name": meta["name"], "uid": meta.get("uid", "")}
    if meta.get("namespace"):
        obj_ref["namespace"] = meta["namespace"]
    if field_path:
        obj_ref["fieldPath"] = field_path
    name = f"{meta['name']}.{digest(kind, meta.get('uid', ''), reason, message, field_path, size=16)}"
    return {
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {PLAYED_BY: STANDIN},
            "annotations": {PLAYED_BY: STANDIN},
        },
        "involvedObject": obj_ref,
        "type": etype,
        "reason": reason,
        "message": message,
        "source": {"component": component, **({"host": host} if host else {})},
        "reportingComponent": reporting,
        "reportingInstance": host or component,
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    }


def image_pull_message(image: str) -> str:
    return (
        f'rpc error: code = NotFound desc = failed to pull and unpack image "{image}": failed to resolve '
        f'reference "{image}": {image}: not found'
    )


def quota_message(pod_name: str) -> str:
    resource = "requests.nvidia.com/gpu"
    return (
        f'pods "{pod_name}" is forbidden: exceeded quota: gpu-quota, requested: {resource}=1, '
        f"used: {resource}=0, limited: {resource}=0"
    )


UNSCHEDULABLE = (
    "0/1 nodes are available: 1 Insufficient nvidia.com/gpu. preemption: 0/1 nodes are available: "
    "1 No preemption victims found for incoming pod."
)
