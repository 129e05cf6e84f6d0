"""The shared machinery of a play: reading what KAITO reads, writing status, pods and events, and the nodes."""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass
from typing import Any

from devcluster.standin import manifests as m
from devcluster.standin import podstate as ps
from devcluster.standin.kaito_logic import now_rfc3339, runtime, sync_status, uses_nap
from devcluster.standin.kube import Kube
from devcluster.standin.logs import performance

Obj = dict[str, Any]
SCENARIO = "kaito-portal.dev/standin-scenario"
STEP = "kaito-portal.dev/standin-step"
SCENARIOS = ("quota", "unschedulable", "image-pull", "oom", "tuning-fails", "crash")
log = logging.getLogger("kaito-standin")


class Gone(Exception):
    """The Workspace was deleted (or is being deleted) while it was played."""


@dataclass
class Settings:
    step_seconds: float = 3.0
    training_steps: int = 4  # how many steps the tuning container runs before it ends
    model_endpoint: tuple[str, int] | None = None  # address the apiserver's service proxy may dial
    kubelet: tuple[str, int] | None = None  # kubelet stand-in the Nodes point at (logs)


def endpoint_problem(ip: str) -> str:
    """Why the apiserver would refuse this Endpoints address (ValidateEndpointIP), or ""."""
    addr = ipaddress.ip_address(ip)
    if addr.is_loopback:
        return "may not be in the loopback range (127.0.0.0/8, ::1/128)"
    if addr.is_link_local:
        return "may not be in the link-local range (169.254.0.0/16, fe80::/10)"
    return "may not be unspecified" if addr.is_unspecified else ""


class Stage:
    """The objects of one Workspace and the writes every step needs; Play adds the steps."""

    def __init__(self, kube: Kube, ws: Obj, settings: Settings) -> None:
        self.kube, self.settings, self.ws = kube, settings, ws
        self.ns, self.name, _uid = m.ws_key(ws)
        wanted = ws["metadata"].get("annotations", {}).get(SCENARIO, "")
        if wanted and wanted not in SCENARIOS:
            log.warning(
                "%s/%s: unknown %s %r (known: %s); playing the success path",
                self.ns,
                self.name,
                SCENARIO,
                wanted,
                ", ".join(SCENARIOS),
            )
        self.scenario = wanted if wanted in SCENARIOS else ""
        self.tuning, self.nap = bool(ws.get("tuning")), uses_nap(ws)
        count = int(ws.get("resource", {}).get("count") or 1)  # KAITO uses resource.count for Transformers only
        self.count = 1 if self.tuning or runtime(ws) == "vllm" else max(1, count)
        self.nodes = m.node_names(ws, self.count)
        self.selector = f"{m.WS_LABEL}={self.name},{m.WS_NS_LABEL}={self.ns}"

    # --- reading and writing ---------------------------------------------------------------------------------------
    def current(self) -> Obj:
        ws = self.kube.read("Workspace", self.ns, self.name)
        if ws is None or ws["metadata"].get("deletionTimestamp") or ws["metadata"].get("uid") != m.ws_key(self.ws)[2]:
            raise Gone
        self.ws = ws
        return ws

    def mark(self, step: str) -> None:
        self.kube.patch("Workspace", self.ns, self.name, m.workspace_metadata_patch(self.current(), step))

    def sync(self) -> str:
        """syncWorkspaceStatus: read what KAITO reads, compute its status, write it to the status subresource."""
        ws = self.current()
        if self.nap:
            nodes, claims = (
                self.kube.list("Node", selector=self.selector),
                self.kube.list("NodeClaim", None, self.selector),
            )
        else:
            labels = (ws["resource"].get("labelSelector") or {}).get("matchLabels") or {}
            selector = ",".join(f"{k}={v}" for k, v in labels.items()) or self.selector
            nodes, claims = self.kube.list("Node", selector=selector), []
        pods = self.kube.list("Pod", self.ns, f"{m.WS_LABEL}={self.name}")
        sts = None if self.tuning else self.kube.read("StatefulSet", self.ns, self.name)
        job = self.kube.read("Job", self.ns, self.name) if self.tuning else None
        _it, gpus, product, _mem = m.sku(ws)
        perf = performance(self.ns, self.name, product, gpus)
        status = sync_status(ws, nodes=nodes, nodeclaims=claims, statefulset=sts, pods=pods, job=job, performance=perf)
        body = {"status": {**status, "performance": status.get("performance")}}  # None removes a stale result
        if self.kube.patch("Workspace", self.ns, self.name, body, status=True) is None:
            raise Gone
        return str(status.get("state"))

    def emit(
        self, obj: Obj, kind: str, api: str, etype: str, reason: str, message: str, source: str, **kw: str
    ) -> None:
        self.kube.create("Event", ps.event(obj, kind, api, etype, reason, message, source, **kw))

    def pods(self) -> list[Obj]:
        return sorted(self.kube.list("Pod", self.ns, f"{m.WS_LABEL}={self.name}"), key=lambda p: p["metadata"]["name"])

    def node_ip(self) -> str:
        return m.node_status(self.ws, plugin_ready=False, kubelet=self.settings.kubelet)["addresses"][0]["address"]

    def set_pod(self, pod: Obj, phase: str, conditions: list[Obj], inits: list[Obj], mains: list[Obj]) -> None:
        status: Obj = {
            "phase": phase,
            "conditions": conditions,
            "qosClass": "BestEffort",
            "initContainerStatuses": inits,
            "containerStatuses": mains,
        }
        if pod["spec"].get("nodeName"):
            endpoint = self.settings.model_endpoint
            index = int(pod["metadata"].get("labels", {}).get("apps.kubernetes.io/pod-index", "0"))
            usable = endpoint and not self.tuning and index == 0 and not endpoint_problem(endpoint[0])
            ip = endpoint[0] if usable and endpoint else m.pod_ip(self.ws, index)
            status.update(
                hostIP=self.node_ip(),
                hostIPs=[{"ip": self.node_ip()}],
                podIP=ip,
                podIPs=[{"ip": ip}],
                startTime=pod.get("status", {}).get("startTime") or now_rfc3339(),
            )
        self.kube.patch("Pod", self.ns, pod["metadata"]["name"], {"status": status}, status=True)

    def kubelet_events(self, pod: Obj, spec: Obj, init: bool = False, pull_error: str = "") -> None:
        path = f"spec.{'initContainers' if init else 'containers'}{{{spec['name']}}}"
        host, image = pod["spec"].get("nodeName", ""), spec["image"]
        self.emit(
            pod, "Pod", "v1", "Normal", "Pulling", f'Pulling image "{image}"', "kubelet", host=host, field_path=path
        )
        if pull_error:
            self.emit(
                pod,
                "Pod",
                "v1",
                "Warning",
                "Failed",
                f'Failed to pull image "{image}": {pull_error}',
                "kubelet",
                host=host,
                field_path=path,
            )
            self.emit(
                pod, "Pod", "v1", "Warning", "Failed", "Error: ErrImagePull", "kubelet", host=host, field_path=path
            )
            return
        pulled = (
            f'Successfully pulled image "{image}" in 41.2s (41.2s including waiting). Image size: 6442450944 bytes.'
        )
        for reason, message in (
            ("Pulled", pulled),
            ("Created", f"Created container: {spec['name']}"),
            ("Started", f"Started container {spec['name']}"),
        ):
            self.emit(pod, "Pod", "v1", "Normal", reason, message, "kubelet", host=host, field_path=path)

    # --- nodes (NAP: NodeClaim -> Node -> GPU device plugin; BYO: the nodes are there already) --------------------
    def accept(self) -> None:
        self.kube.patch("Workspace", self.ns, self.name, m.workspace_metadata_patch(self.current(), ""))
        self.kube.patch("Workspace", self.ns, self.name, {"status": {"targetNodeCount": self.count}}, status=True)
        for index in range(self.count if self.nap else 0):  # one NodeClaim per node, as KAITO's NAP does
            claim = self.kube.create("NodeClaim", m.nodeclaim(self.ws, index))
            name = claim["metadata"]["name"]
            self.kube.patch("NodeClaim", None, name, {"status": m.nodeclaim_status("", False)}, status=True)
            text = f"Successfully created NodeClaim {name} for workspace {self.name}"
            self.emit(self.ws, "Workspace", "kaito.sh/v1beta1", "Normal", "NodeClaimCreated", text, "kaito")
        if not self.nap:
            self.create_nodes(plugin_ready=True)

    def create_nodes(self, plugin_ready: bool) -> None:
        for name in self.nodes:
            status = m.node_status(self.ws, plugin_ready=plugin_ready, kubelet=self.settings.kubelet)
            node = self.kube.create("Node", {**m.node(self.ws, name), "status": status})
            self.kube.patch("Node", None, node["metadata"]["name"], {"status": status}, status=True)

    def node_joins(self) -> None:
        for index, node_name in enumerate(self.nodes):
            status = m.nodeclaim_status(node_name, True)
            self.kube.patch("NodeClaim", None, m.nodeclaim_name(self.ws, index), {"status": status}, status=True)
        self.create_nodes(plugin_ready=False)

    def plugins_ready(self) -> None:
        status = m.node_status(self.ws, plugin_ready=True, kubelet=self.settings.kubelet)
        for name in self.nodes:
            self.kube.patch("Node", None, name, {"status": {"allocatable": status["allocatable"]}}, status=True)
