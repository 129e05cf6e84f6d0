"""The shared machinery of a play: reading what KAITO reads, writing status, pods and events, and the nodes."""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from devcluster.standin import manifests as m
from devcluster.standin import podstate as ps
from devcluster.standin.kaito_logic import now_rfc3339, runtime, sync_status, uses_nap
from devcluster.standin.kube import Kube
from devcluster.standin.logs import performance

if TYPE_CHECKING:
    from devcluster.standin.models import ModelFleet

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
    model_endpoint: tuple[str, int] | None = None  # one shared model the apiserver's service proxy may dial
    models: ModelFleet | None = None  # or one model stand-in per Ready Workspace (wins over model_endpoint)
    kubelet: tuple[str, int] | None = None  # kubelet stand-in the Nodes point at (logs)


def endpoint_problem(ip: str) -> str:
    """Why the apiserver would refuse this Endpoints address (ValidateEndpointIP), or ""."""
    addr = ipaddress.ip_address(ip)
    if addr.is_loopback:
        return "may not be in the loopback range (127.0.0.0/8, ::1/128)"
    if addr.is_link_local:
        return "may not be in the link-local range (169.254.0.0/16, fe80::/10)"
    return "may not be unspecified" if addr.is_unspecified else ""


def endpoints_port(obj: Obj | None) -> int | None:
    """The published http port of an Endpoints object, if any."""
    for subset in (obj or {}).get("subsets") or []:
        for port in subset.get("ports") or []:
            if port.get("name") == "http":
                return int(port["port"])
    return None


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
            model_ip = self.model_ip()
            index = int(pod["metadata"].get("labels", {}).get("apps.kubernetes.io/pod-index", "0"))
            usable = bool(model_ip) and not self.tuning and index == 0 and not endpoint_problem(model_ip)
            ip = model_ip if usable else m.pod_ip(self.ws, index)
            status.update(
                hostIP=self.node_ip(),
                hostIPs=[{"ip": self.node_ip()}],
                podIP=ip,
                podIPs=[{"ip": ip}],
                startTime=pod.get("status", {}).get("startTime") or now_rfc3339(),
            )
        self.kube.patch("Pod", self.ns, pod["metadata"]["name"], {"status": status}, status=True)

    # --- the model behind the Service ------------------------------------------------------------------------------
    def model_ip(self) -> str:
        """The address the model listens on: pod <ws>-0's IP, so the service proxy's pod IP check passes."""
        if self.settings.models is not None:
            return self.settings.models.host
        return self.settings.model_endpoint[0] if self.settings.model_endpoint else ""

    def publish_endpoints(self) -> None:
        """At Ready (and again after a restart): start the Workspace's own model, point Service and Endpoints at it.

        The service proxy maps services/<ws>:80 to the Service port's name ("http"), then dials the Endpoints port of
        that name at an address that must be one of the target pod's podIPs; it never reads targetPort
        (k8s.io/kubernetes v1.34.4 pkg/registry/core/service/storage/storage.go ResourceLocation, isValidAddress).
        The stand-ins share one address, so each has its own port: targetPort is set to it too, as the endpoints
        controller derives the Endpoints port from targetPort. The pod spec keeps KAITO's containerPort 5000.
        """
        fleet, endpoint = self.settings.models, self.settings.model_endpoint
        if fleet is not None:
            published = self.kube.read("Endpoints", self.ns, self.name)
            port = fleet.serve(self.current(), prefer=endpoints_port(published))
            endpoint = (fleet.host, port)
            if endpoint_problem(fleet.host):  # no extra address: the router reaches it (KAITO_INFERENCE_URL)
                return
        if endpoint is None:
            log.info("%s/%s: no --model-url: no Endpoints; the portal needs KAITO_INFERENCE_URL", self.ns, self.name)
            return
        problem = endpoint_problem(endpoint[0])
        if problem:
            log.warning(
                "%s/%s: not writing Endpoints for %s: the apiserver refuses it (%s); use KAITO_INFERENCE_URL "
                "or a non-loopback local address (python -m devcluster.standin.localaddr add)",
                self.ns,
                self.name,
                endpoint[0],
                problem,
            )
            return
        pod = self.kube.read("Pod", self.ns, f"{self.name}-0")
        if pod:  # published at Ready, not at start-up: the model stand-in would answer before vLLM could
            self.target_port(endpoint[1])
            full, slice_ = m.endpoints(self.ws, pod, *endpoint), m.endpoint_slice(self.ws, pod, *endpoint)
            self.kube.patch("Endpoints", self.ns, self.name, {"subsets": full["subsets"]})
            body = {"endpoints": slice_["endpoints"], "ports": slice_["ports"]}
            self.kube.patch("EndpointSlice", self.ns, slice_["metadata"]["name"], body)

    def target_port(self, port: int) -> None:
        """The Service's http port forwards to the model's port (a merge patch replaces the whole ports list)."""
        svc = self.kube.read("Service", self.ns, self.name)
        ports = (svc or {}).get("spec", {}).get("ports") or []
        if any(p.get("name") == "http" and p.get("targetPort") != port for p in ports):
            ports = [{**p, "targetPort": port} if p.get("name") == "http" else p for p in ports]
            self.kube.patch("Service", self.ns, self.name, {"spec": {"ports": ports}})

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
