"""One Workspace's trip through KAITO v0.12's sequence: each step changes the objects, then the status follows them."""

# Steps write what the node provisioner, scheduler, kubelet and Job/StatefulSet controllers would write; the status is
# then computed from those objects with KAITO's own logic (kaito_logic.sync_status), never written by hand.

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from devcluster.standin import manifests as m
from devcluster.standin import podstate as ps
from devcluster.standin.kaito_logic import FINALIZER, now_rfc3339, runtime, set_condition
from devcluster.standin.kube import Kube, wait
from devcluster.standin.stage import SCENARIO, SCENARIOS, STEP, Gone, Settings, Stage

Obj = dict[str, Any]
__all__ = ["SCENARIO", "SCENARIOS", "STEP", "Gone", "Play", "Settings", "cleanup", "finalize"]
log = logging.getLogger("kaito-standin")


class Play(Stage):
    """Moves one Workspace through the steps of its kind (inference or tuning) and scenario."""

    # --- the plan ------------------------------------------------------------------------------------------------
    def steps(self) -> list[tuple[str, Callable[[], None], float]]:
        plan: list[tuple[str, Callable[[], None], float]] = [("accepted", self.accept, 1)]
        if self.nap:
            plan += [("node-joined", self.node_joins, 1), ("gpu-plugin-ready", self.plugins_ready, 1)]
        plan.append(("workload-created", self.deploy, 1))
        if self.scenario in ("quota", "unschedulable"):
            return plan
        if self.tuning:
            plan.append(("init-containers-done", self.init_done, 1))
        else:
            plan.append(("container-started", self.start, 1))
        if self.scenario == "image-pull":
            return [*plan, ("image-pull-backoff", self.pull_backoff, 1)]
        if self.tuning:
            plan += [("running", self.run_tuning, self.settings.training_steps), ("finished", self.finish, 1)]
        elif self.scenario in ("oom", "crash", "tuning-fails"):
            plan.append(("crash-loop", self.crash_loop, 1))
        else:
            plan.append(("ready", self.ready, 1))
        return plan

    def run(self) -> None:
        plan = self.steps()
        names = [name for name, _action, _factor in plan]
        done = self.ws["metadata"].get("annotations", {}).get(STEP, "")
        start = names.index(done) + 1 if done in names else 0  # resume after a stand-in restart
        if start:
            log.info("%s/%s: resuming after step %r", self.ns, self.name, done)
        if start == len(plan) and done == "ready" and (self.settings.models or self.settings.model_endpoint):
            self.publish_endpoints()  # a restarted stand-in serves it again; a changed spec gets a new server
        for name, action, factor in plan[start:]:
            action()
            state = self.sync()
            self.mark(name)  # after the status: a reader that sees the step sees its status
            log.info(
                "%s/%s: %s -> state %s%s",
                self.ns,
                self.name,
                name,
                state,
                f" (scenario {self.scenario})" if self.scenario else "",
            )
            if name != names[-1]:
                wait(self.kube.stop, self.settings.step_seconds * factor)

    # --- workloads --------------------------------------------------------------------------------------------------
    def deploy(self) -> None:
        pending = ps.pod_conditions(scheduled=True, initialized=self.tuning is False, ready=False)
        if self.tuning:
            owner = self.kube.create("Job", m.job(self.current()))
            kind, api, source = "Job", "batch/v1", "job"
            pods = [m.tuning_pod(self.ws, owner)]
        else:
            self.kube.create("Service", m.service(self.ws))
            self.kube.create("Service", m.headless_service(self.ws))
            # The endpoints controller writes an empty Endpoints at once: the proxy then answers 503, not 404.
            self.kube.create("Endpoints", m.endpoints(self.ws))
            self.kube.create("EndpointSlice", m.endpoint_slice(self.ws))
            benchmark = runtime(self.ws) == "vllm" and bool((self.ws.get("inference") or {}).get("preset"))
            benchmark = (
                benchmark and self.ws["metadata"].get("annotations", {}).get("kaito.sh/disable-benchmark") != "true"
            )
            owner = self.kube.create("StatefulSet", m.statefulset(self.ws, self.count, benchmark))
            kind, api, source = "StatefulSet", "apps/v1", "statefulset"
            pods = [m.inference_pod(self.ws, owner, i) for i in range(self.count)]
        if self.scenario == "quota":
            for pod in pods:
                quota = ps.quota_message(pod["metadata"]["name"])
                text = (
                    f"Error creating: {quota}"
                    if self.tuning
                    else f"create Pod {pod['metadata']['name']} in StatefulSet {self.name} failed error: {quota}"
                )
                self.emit(owner, kind, api, "Warning", "FailedCreate", text, source)
            return
        for node_name, pod in zip(self.nodes, pods, strict=False):
            if self.scenario != "unschedulable":
                pod["spec"]["nodeName"] = node_name
            pod = self.kube.create("Pod", pod)
            pod_name = pod["metadata"]["name"]
            text = (
                f"Created pod: {pod_name}"
                if self.tuning
                else f"create Pod {pod_name} in StatefulSet {self.name} successful"
            )
            self.emit(owner, kind, api, "Normal", "SuccessfulCreate", text, source)
            if self.scenario == "unschedulable":
                self.emit(pod, "Pod", "v1", "Warning", "FailedScheduling", ps.UNSCHEDULABLE, "scheduler")
                self.set_pod(
                    pod,
                    "Pending",
                    ps.pod_conditions(scheduled=False, initialized=False, ready=False, unschedulable=ps.UNSCHEDULABLE),
                    [],
                    [],
                )
                continue
            self.emit(
                pod,
                "Pod",
                "v1",
                "Normal",
                "Scheduled",
                f"Successfully assigned {self.ns}/{pod_name} to {node_name}",
                "scheduler",
            )
            reason = "PodInitializing" if self.tuning else "ContainerCreating"
            inits = [ps.container(pod, c, ps.waiting("PodInitializing")) for c in pod["spec"].get("initContainers", [])]
            mains = [ps.container(pod, c, ps.waiting(reason)) for c in pod["spec"]["containers"]]
            self.set_pod(pod, "Pending", pending, inits, mains)
        if self.tuning:
            self.kube.patch(
                "Job",
                self.ns,
                self.name,
                {"status": {"active": 1, "ready": 0, "startTime": now_rfc3339()}},
                status=True,
            )
        else:
            sts_status = {
                "replicas": self.count,
                "readyReplicas": 0,
                "currentReplicas": self.count,
                "updatedReplicas": self.count,
                "availableReplicas": 0,
                "observedGeneration": 1,
            }
            self.kube.patch("StatefulSet", self.ns, self.name, {"status": sts_status}, status=True)

    def _started(self, pod: Obj, name: str) -> str:
        for cs in pod.get("status", {}).get("containerStatuses", []):
            if cs["name"] == name and "running" in cs.get("state", {}):
                return str(cs["state"]["running"]["startedAt"])
        return now_rfc3339()

    def _pull_error(self, pod: Obj) -> str:
        return ps.image_pull_message(pod["spec"]["containers"][0]["image"]) if self.scenario == "image-pull" else ""

    def start(self) -> None:
        """Inference: the main container is pulled and started; vLLM loads the model (not ready yet)."""
        for pod in self.pods():
            spec, error = pod["spec"]["containers"][0], self._pull_error(pod)
            self.kubelet_events(pod, spec, pull_error=error)
            state = ps.waiting("ErrImagePull", error) if error else ps.running(now_rfc3339())
            conditions = ps.pod_conditions(scheduled=True, initialized=True, ready=False)
            self.set_pod(pod, "Pending" if error else "Running", conditions, [], [ps.container(pod, spec, state)])

    def init_done(self) -> None:
        """Tuning: the init containers (weights, data) ran to completion; the main containers come next."""
        for pod in self.pods():
            inits = []
            for spec in pod["spec"].get("initContainers", []):
                self.kubelet_events(pod, spec, init=True)
                started = now_rfc3339()
                inits.append(
                    ps.container(pod, spec, ps.terminated(pod, spec["name"], "Completed", 0, started, started))
                )
            error = self._pull_error(pod)
            if error:
                self.kubelet_events(pod, pod["spec"]["containers"][0], pull_error=error)
            mains = [
                ps.container(
                    pod, c, ps.waiting("ErrImagePull", error) if error and i == 0 else ps.waiting("ContainerCreating")
                )
                for i, c in enumerate(pod["spec"]["containers"])
            ]
            self.set_pod(pod, "Pending", ps.pod_conditions(scheduled=True, initialized=True, ready=False), inits, mains)

    def pull_backoff(self) -> None:
        for pod in self.pods():
            spec, host = pod["spec"]["containers"][0], pod["spec"].get("nodeName", "")
            path, image = f"spec.containers{{{spec['name']}}}", spec["image"]
            self.emit(
                pod,
                "Pod",
                "v1",
                "Normal",
                "BackOff",
                f'Back-off pulling image "{image}"',
                "kubelet",
                host=host,
                field_path=path,
            )
            self.emit(
                pod, "Pod", "v1", "Warning", "Failed", "Error: ImagePullBackOff", "kubelet", host=host, field_path=path
            )
            message = f'Back-off pulling image "{image}": ErrImagePull: {ps.image_pull_message(image)}'
            status = pod["status"]
            mains = [dict(cs) for cs in status.get("containerStatuses", [])]
            mains[0] = ps.container(pod, spec, ps.waiting("ImagePullBackOff", message))
            self.set_pod(pod, status["phase"], status["conditions"], status.get("initContainerStatuses", []), mains)

    def crash_loop(self) -> None:
        """Inference: the container dies (OOMKilled, or exit 1) and the kubelet backs off restarting it."""
        oom = self.scenario == "oom"
        for pod in self.pods():
            spec, pod_name, host = pod["spec"]["containers"][0], pod["metadata"]["name"], pod["spec"]["nodeName"]
            last = ps.terminated(
                pod,
                spec["name"],
                "OOMKilled" if oom else "Error",
                137 if oom else 1,
                self._started(pod, spec["name"]),
                now_rfc3339(),
            )["terminated"]
            who = f"{pod_name}_{self.ns}({pod['metadata']['uid']})"
            state = ps.waiting("CrashLoopBackOff", f"back-off 10s restarting failed container={spec['name']} pod={who}")
            mains = [ps.container(pod, spec, state, restarts=1, last=last)]
            self.set_pod(pod, "Running", ps.pod_conditions(scheduled=True, initialized=True, ready=False), [], mains)
            self.emit(
                pod,
                "Pod",
                "v1",
                "Warning",
                "BackOff",
                f"Back-off restarting failed container {spec['name']} in pod {who}",
                "kubelet",
                host=host,
                field_path=f"spec.containers{{{spec['name']}}}",
            )
            if oom:
                self.oom_event(host)

    def oom_event(self, node_name: str) -> None:
        node = self.kube.read("Node", None, node_name)
        if node:
            text = (
                "Memory cgroup out of memory: Killed process 4242 (python3) total-vm:231245760kB, "
                "anon-rss:220103680kB, file-rss:0kB, shmem-rss:0kB, UID:0 pgtables:431560kB oom_score_adj:936"
            )
            self.emit(node, "Node", "v1", "Warning", "OOMKilling", text, "kubelet", host=node_name)

    def ready(self) -> None:
        """Inference: the readiness probe passes; the endpoints controller would now publish <ws>-0."""
        for pod in self.pods():
            spec = pod["spec"]["containers"][0]
            state = ps.running(self._started(pod, spec["name"]))
            conditions = ps.pod_conditions(scheduled=True, initialized=True, ready=True)
            self.set_pod(pod, "Running", conditions, [], [ps.container(pod, spec, state, ready=True)])
        sts_status = {"replicas": self.count, "readyReplicas": self.count, "availableReplicas": self.count}
        self.kube.patch("StatefulSet", self.ns, self.name, {"status": sts_status}, status=True)
        self.publish_endpoints()

    def run_tuning(self) -> None:
        for pod in self.pods():
            for spec in pod["spec"]["containers"]:
                self.kubelet_events(pod, spec)
            now = now_rfc3339()
            mains = [ps.container(pod, c, ps.running(now), ready=True) for c in pod["spec"]["containers"]]
            inits = pod["status"].get("initContainerStatuses", [])
            self.set_pod(pod, "Running", ps.pod_conditions(scheduled=True, initialized=True, ready=True), inits, mains)
        self.kube.patch("Job", self.ns, self.name, {"status": {"active": 1, "ready": 1}}, status=True)

    def finish(self) -> None:
        ok = self.scenario not in ("oom", "tuning-fails", "crash")
        reason, code = {"oom": ("OOMKilled", 137), "": ("Completed", 0)}.get(self.scenario, ("Error", 1))
        now = now_rfc3339()
        for pod in self.pods():
            mains = []
            for i, spec in enumerate(pod["spec"]["containers"]):
                # The main container decides; the sidecars finish with it (pushed) or are killed with the pod.
                why, exit_code = (reason, code) if i == 0 else (("Completed", 0) if ok else ("Error", 137))
                state = ps.terminated(pod, spec["name"], why, exit_code, self._started(pod, spec["name"]), now)
                mains.append(ps.container(pod, spec, state))
            inits = pod["status"].get("initContainerStatuses", [])
            conditions = ps.pod_conditions(scheduled=True, initialized=True, ready=False)
            self.set_pod(pod, "Succeeded" if ok else "Failed", conditions, inits, mains)
            if self.scenario == "oom":
                self.oom_event(pod["spec"]["nodeName"])
        job = self.kube.read("Job", self.ns, self.name) or {"metadata": {"name": self.name, "namespace": self.ns}}
        if ok:
            conds = [
                {
                    "type": t,
                    "status": "True",
                    "reason": "CompletionsReached",
                    "lastProbeTime": now,
                    "lastTransitionTime": now,
                    "message": "Reached expected number of succeeded pods",
                }
                for t in ("SuccessCriteriaMet", "Complete")
            ]
            status = {"active": 0, "ready": 0, "succeeded": 1, "completionTime": now, "conditions": conds}
            self.kube.patch("Job", self.ns, self.name, {"status": status}, status=True)
            self.emit(job, "Job", "batch/v1", "Normal", "Completed", "Job completed", "job")
        else:
            self.kube.patch("Job", self.ns, self.name, {"status": {"active": 0, "ready": 0, "failed": 1}}, status=True)


# --- deletion -------------------------------------------------------------------------------------------------------
NAMESPACED = ("Endpoints", "EndpointSlice", "Service", "StatefulSet", "Job", "Pod")


def cleanup(kube: Kube, namespace: str, name: str) -> int:
    """Delete what was created for namespace/name (no garbage collector runs here); return how many objects."""
    selector = f"{m.WS_LABEL}={name},{m.WS_NS_LABEL}={namespace},{m.PLAYED_BY}={m.STANDIN}"
    count = 0
    for kind in NAMESPACED:
        for obj in kube.list(kind, namespace, selector):
            count += kube.delete(kind, namespace, obj["metadata"]["name"])
    for kind in ("NodeClaim", "Node"):
        for obj in kube.list(kind, None, selector):
            count += kube.delete(kind, None, obj["metadata"]["name"])
    return count


def finalize(kube: Kube, ws: Obj) -> int:
    """A deleted Workspace: WorkspaceDeleting condition, garbage collection, then KAITO's finalizer comes off."""
    ns, name, _uid = m.ws_key(ws)
    if FINALIZER in (ws["metadata"].get("finalizers") or []):
        status = {**ws.get("status", {}), "conditions": [dict(c) for c in ws.get("status", {}).get("conditions", [])]}
        set_condition(
            status["conditions"],
            "WorkspaceDeleting",
            "True",
            "workspaceDeleted",
            "workspace is being deleted",
            int(ws["metadata"].get("generation", 1)),
        )
        kube.patch("Workspace", ns, name, {"status": status}, status=True)
    count = cleanup(kube, ns, name)
    finalizers = [f for f in ws["metadata"].get("finalizers") or [] if f != FINALIZER]
    if FINALIZER in (ws["metadata"].get("finalizers") or []):
        kube.patch("Workspace", ns, name, {"metadata": {"finalizers": finalizers}})
    return count
