"""KAITO v0.12's Workspace status logic as pure functions over the objects KAITO reads (Nodes, Pods, Job...)."""

# Ported from kaito-project/kaito `pkg/workspace/controllers/workspace_controller.go` (`syncWorkspaceStatus`,
# `applyInferenceWorkspaceStatus`, `applyTuningWorkspaceStatus`, `classifyInferencePodFailure`),
# `pkg/nodeprovision/gpu-provisioner/gpu_provisioner.go` (`CollectNodeStatusInfo`) and `benchmark.go`. The exact
# v0.12.0 tag was not available offline; condition types and reasons match /work/shared/docs/kaito-reference.md §1.2,
# the messages are the ones in the upstream source that was readable.

from __future__ import annotations

import datetime as dt
from typing import Any

Obj = dict[str, Any]
FINALIZER = "workspace.finalizer.kaito.sh"
GPU = "nvidia.com/gpu"
INSTANCE_TYPE_LABEL = "node.kubernetes.io/instance-type"
IMAGE_PULL_REASONS = {
    "ImagePullBackOff",
    "ErrImagePull",
    "InvalidImageName",
    "ErrImageNeverPull",
    "ImageInspectError",
    "RegistryUnavailable",
}
START_ERROR_REASONS = {
    "CreateContainerConfigError",
    "PreCreateHookError",
    "CreateContainerError",
    "PreStartHookError",
    "RunContainerError",
    "PostStartHookError",
}
MAX_MESSAGE = 256  # maxInferenceMessageLen


def now_rfc3339() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def runtime(ws: Obj) -> str:
    """GetWorkspaceRuntimeName with the vLLM gate on (the chart default)."""
    wanted = ws.get("metadata", {}).get("annotations", {}).get("kaito.sh/runtime", "")
    return "transformers" if wanted.lower() == "transformers" else "vllm"


def served_name(ws: Obj) -> str:
    """--served-model-name: the lower-cased last path segment of the preset (generator.go NewGenerator)."""
    preset = ((ws.get("inference") or ws.get("tuning") or {}).get("preset") or {}).get("name", "")
    return preset.rstrip("/").split("/")[-1].lower()


def uses_nap(ws: Obj) -> bool:
    """NAP needs resource.instanceType, BYO forbids it, so the spec tells which mode the cluster runs."""
    return bool(ws.get("resource", {}).get("instanceType"))


def should_run_benchmark(ws: Obj) -> bool:
    """ShouldRunBenchmark: vLLM, a preset, and no `kaito.sh/disable-benchmark: "true"`."""
    annotations = ws.get("metadata", {}).get("annotations", {})
    preset = (ws.get("inference") or {}).get("preset")
    return runtime(ws) == "vllm" and bool(preset) and annotations.get("kaito.sh/disable-benchmark") != "true"


def set_condition(conditions: list[Obj], ctype: str, status: str, reason: str, message: str, generation: int) -> None:
    """meta.SetStatusCondition: update in place (new types are appended); the transition time moves with status."""
    for cond in conditions:
        if cond["type"] == ctype:
            if cond["status"] != status:
                cond["lastTransitionTime"] = now_rfc3339()
            cond.update(status=status, reason=reason, message=message, observedGeneration=generation)
            return
    conditions.append(
        {
            "type": ctype,
            "status": status,
            "reason": reason,
            "message": message,
            "observedGeneration": generation,
            "lastTransitionTime": now_rfc3339(),
        }
    )


def _truncate(message: str) -> str:
    return message if len(message) <= MAX_MESSAGE else message[: MAX_MESSAGE - 3] + "..."


def node_is_ready(node: Obj) -> bool:
    if node.get("metadata", {}).get("deletionTimestamp"):
        return False
    conds = node.get("status", {}).get("conditions", [])
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conds)


def nodeclaim_is_ready(claim: Obj) -> bool:
    if claim.get("metadata", {}).get("deletionTimestamp"):
        return False
    return any(c["type"] == "Ready" and c["status"] == "True" for c in claim.get("status", {}).get("conditions", []))


def gpu_plugin_ready(node: Obj) -> bool:
    """The NVIDIA device plugin has registered: the node advertises allocatable GPUs."""
    return int(node.get("status", {}).get("allocatable", {}).get(GPU, "0") or 0) > 0


def node_conditions(ws: Obj, nodes: list[Obj], nodeclaims: list[Obj]) -> list[tuple[str, str, str, str]]:
    """CollectNodeStatusInfo: (type, status, reason, message) for NodesReady, NodeClaimReady (NAP), ResourceReady."""
    nap = uses_nap(ws)
    target = int(ws.get("status", {}).get("targetNodeCount") or 0)
    instance_type = ws.get("resource", {}).get("instanceType", "")
    ready = [n for n in nodes if node_is_ready(n)]
    if nap:
        ready = [n for n in ready if n["metadata"].get("labels", {}).get(INSTANCE_TYPE_LABEL) == instance_type]
    node = ("False", "NodeNotReady", "Not enough Nodes are ready")
    if len(ready) >= target:
        node = ("True", "NodesReady", "Enough Nodes are ready")
        if not all(gpu_plugin_ready(n) for n in ready):
            node = ("False", "NodePluginsNotReady", "waiting all node plugins to be ready")
    claim = ("False", "NodeClaimNotReady", "Ready NodeClaims are not enough")
    if sum(nodeclaim_is_ready(c) for c in nodeclaims) >= target:
        claim = ("True", "NodeClaimsReady", "Enough NodeClaims are ready")
    if node[0] == "True" and (not nap or claim[0] == "True"):
        resource = ("True", "workspaceResourceStatusSuccess", "workspace resource is ready")
    elif nap and claim[0] != "True":
        resource = ("False", claim[1], claim[2])
    else:
        resource = ("False", node[1], node[2])
    out = [("NodesReady", *node)]
    if nap:
        out.append(("NodeClaimReady", *claim))
    out.append(("ResourceReady", *resource))
    return out


def _statuses(pod: Obj) -> list[Obj]:
    status = pod.get("status", {})
    return [*status.get("initContainerStatuses", []), *status.get("containerStatuses", [])]


def classify_inference_pod_failure(pods: list[Obj]) -> tuple[str, str]:
    """classifyInferencePodFailure without the model-streaming (SAS) branch: most actionable first."""
    for cs in (cs for pod in pods for cs in _statuses(pod)):
        for term in (cs.get("state", {}).get("terminated"), cs.get("lastState", {}).get("terminated")):
            if term and term.get("reason") == "OOMKilled":
                return "ContainerOOMKilled", _truncate(
                    f'container "{cs["name"]}" was OOMKilled (exit code {term.get("exitCode", 137)}); '
                    "reduce memory usage or use a larger instance type"
                )
    checks = (
        ("ImagePullError", IMAGE_PULL_REASONS, 'container "{n}" image pull failed ({r}): {m}'),
        ("ContainerStartError", START_ERROR_REASONS, 'container "{n}" failed to start ({r}): {m}'),
    )
    for reason, waiting_reasons, template in checks:
        for cs in (cs for pod in pods for cs in _statuses(pod)):
            waiting = cs.get("state", {}).get("waiting") or {}
            if waiting.get("reason") in waiting_reasons:
                text = template.format(n=cs["name"], r=waiting["reason"], m=waiting.get("message", ""))
                return reason, _truncate(text)
    for cs in (cs for pod in pods for cs in _statuses(pod)):
        if (cs.get("state", {}).get("waiting") or {}).get("reason") == "CrashLoopBackOff":
            message = f'container "{cs["name"]}" is in CrashLoopBackOff'
            last = cs.get("lastState", {}).get("terminated")
            if last:
                detail = last.get("message") or f"exit code {last.get('exitCode', 0)}"
                message += f"; last termination: {detail}"
            return "ContainerCrashLoopBackOff", _truncate(message)
    for pod in pods:
        status = pod.get("status", {})
        if status.get("phase") == "Failed" and status.get("reason") == "Evicted":
            return "PodEvicted", _truncate(f'pod "{pod["metadata"]["name"]}" was evicted: {status.get("message", "")}')
    for pod in pods:
        if pod.get("status", {}).get("phase") != "Pending":
            continue
        for cond in pod["status"].get("conditions", []):
            if cond["type"] == "PodScheduled" and cond["status"] == "False" and cond.get("reason") == "Unschedulable":
                name = pod["metadata"]["name"]
                return "Unschedulable", _truncate(f'pod "{name}" is unschedulable: {cond.get("message", "")}')
    return "", ""


def has_benchmark_probe(sts: Obj | None) -> bool:
    containers = (sts or {}).get("spec", {}).get("template", {}).get("spec", {}).get("containers", [])
    return any(
        "benchmark_entrypoint.py" in " ".join((c.get("startupProbe") or {}).get("exec", {}).get("command", []))
        for c in containers
    )


def apply_inference_status(
    status: Obj, ws: Obj, *, ready: bool, performance: Obj | None, fail_reason: str, fail_message: str
) -> None:
    """applyInferenceWorkspaceStatus (ready means StatefulSet readyReplicas == replicas)."""
    gen = int(ws["metadata"].get("generation", 1))
    conds = status.setdefault("conditions", [])
    resource_ready = any(c["type"] == "ResourceReady" and c["status"] == "True" for c in conds)
    established = status.get("state") in ("Ready", "NotReady")
    if ready and resource_ready:
        set_condition(
            conds,
            "InferenceReady",
            "True",
            "WorkspaceInferenceStatusSuccess",
            "Inference has been deployed successfully",
            gen,
        )
        if performance is not None:
            status["performance"] = performance
            set_condition(
                conds, "BenchmarkCompleted", "True", "BenchmarkCompleted", "benchmark result has been recorded", gen
            )
        set_condition(conds, "WorkspaceSucceeded", "True", "workspaceSucceeded", "workspace succeeds", gen)
        status["state"] = "Ready"
        return
    reason, message = (
        fail_reason or "WorkspaceInferenceStatusPending",
        fail_message or "Inference workload is not ready",
    )
    set_condition(conds, "InferenceReady", "False", reason, message, gen)
    set_condition(
        conds,
        "WorkspaceSucceeded",
        "False",
        "workspacePending",
        "workspace is waiting for inference workload readiness",
        gen,
    )
    status["state"] = "NotReady" if established else "Pending"


def apply_tuning_status(status: Obj, ws: Obj, job: Obj | None) -> None:
    """applyTuningWorkspaceStatus: Failed on the first failed pod, Running as soon as the Job has an active pod."""
    gen = int(ws["metadata"].get("generation", 1))
    conds = status.setdefault("conditions", [])
    js = (job or {}).get("status", {})
    succeeded, failed = js.get("succeeded", 0) > 0, js.get("failed", 0) > 0
    started = succeeded or js.get("ready", 0) > 0 or js.get("active", 0) > 0
    if failed:
        set_condition(conds, "JobStarted", "False", "WorkspaceTuningJobStatusFailed", "tuning job failed", gen)
        set_condition(conds, "WorkspaceSucceeded", "False", "workspaceFailed", "tuning job failed", gen)
        status["state"] = "Failed"
        return
    if started:
        set_condition(conds, "JobStarted", "True", "WorkspaceTuningJobStatusStarted", "Tuning job has started", gen)
    else:
        set_condition(
            conds, "JobStarted", "False", "WorkspaceTuningJobStatusPending", "Tuning job has not started", gen
        )
    if succeeded:
        set_condition(conds, "WorkspaceSucceeded", "True", "workspaceSucceeded", "workspace succeeds", gen)
        status["state"] = "Succeeded"
    elif started:
        set_condition(
            conds,
            "WorkspaceSucceeded",
            "False",
            "workspacePending",
            "workspace has not completed yet, tuning job is running",
            gen,
        )
        status["state"] = "Running"
    else:
        set_condition(
            conds,
            "WorkspaceSucceeded",
            "False",
            "workspacePending",
            "workspace is initializing, tuning job has not started",
            gen,
        )
        status["state"] = "Pending"


def sync_status(
    ws: Obj,
    *,
    nodes: list[Obj],
    nodeclaims: list[Obj],
    statefulset: Obj | None = None,
    pods: list[Obj] = (),  # type: ignore[assignment]
    job: Obj | None = None,
    performance: Obj | None = None,
) -> Obj:
    """syncWorkspaceStatus: the status KAITO writes after a reconcile, from the objects it reads."""
    status: Obj = {**ws.get("status", {})}
    status["conditions"] = [dict(c) for c in status.get("conditions", [])]
    gen = int(ws["metadata"].get("generation", 1))
    if ws["metadata"].get("deletionTimestamp"):
        set_condition(
            status["conditions"], "WorkspaceDeleting", "True", "workspaceDeleted", "workspace is being deleted", gen
        )
        return status
    status["workerNodes"] = sorted(n["metadata"]["name"] for n in nodes)
    for ctype, cstatus, reason, message in node_conditions(ws, nodes, nodeclaims):
        set_condition(status["conditions"], ctype, cstatus, reason, message, gen)
    if ws.get("tuning"):
        apply_tuning_status(status, ws, job)
    elif ws.get("inference"):
        replicas = int((statefulset or {}).get("spec", {}).get("replicas", 1))
        ready = statefulset is not None and statefulset.get("status", {}).get("readyReplicas", 0) == replicas
        reason, message = ("", "") if ready else classify_inference_pod_failure(list(pods))
        applicable = should_run_benchmark(ws) and has_benchmark_probe(statefulset)
        apply_inference_status(
            status,
            ws,
            ready=ready,
            performance=performance if applicable else None,
            fail_reason=reason,
            fail_message=message,
        )
    return status


def signature(status: Obj) -> tuple[Any, ...]:
    """What a reader compares: state plus (type, status, reason) of every condition, in order."""
    return (status.get("state"), tuple((c["type"], c["status"], c["reason"]) for c in status.get("conditions", [])))
