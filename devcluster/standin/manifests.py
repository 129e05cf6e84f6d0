"""The objects KAITO v0.12 (and the cluster around it) would create for a Workspace, marked as played by a stand-in."""

# Shapes follow /work/shared/docs/kaito-reference.md §2 (Services, StatefulSet, tuning Job) and the fake GPU node of
# controlplane-recipe.md §4. Every object carries the label and annotation `kaito-portal.dev/played-by`.

from __future__ import annotations

import hashlib
from typing import Any

from devcluster.standin.kaito_logic import FINALIZER, GPU, INSTANCE_TYPE_LABEL, now_rfc3339, runtime, served_name

Obj = dict[str, Any]
PLAYED_BY = "kaito-portal.dev/played-by"
STANDIN = "kaito-standin"
WS_LABEL, WS_NS_LABEL = "kaito.sh/workspace", "kaito.sh/workspacenamespace"
BASE_IMAGE = "mcr.microsoft.com/aks/kaito/kaito-base:0.5.0"
ORAS_PULL_IMAGE = "mcr.microsoft.com/oss/v2/oras-project/oras:v1.2.3"
ORAS_PUSH_IMAGE = "ghcr.io/oras-project/oras:v1.2.2"
CURL_IMAGE, SKOPEO_IMAGE = "curlimages/curl", "mcr.microsoft.com/aks/skopeo:1.14.4-6"
PAUSE_IMAGE = "registry.k8s.io/pause:3.10"
# instance type -> (GPUs, GFD product label, MiB per GPU); BYO nodes get the first entry (no instanceType).
SKUS = {
    "Standard_NC24ads_A100_v4": (1, "NVIDIA-A100-PCIE-80GB", 81920),
    "Standard_NV36ads_A10_v5": (1, "NVIDIA-A10", 24576),
    "Standard_NV72ads_A10_v5": (2, "NVIDIA-A10", 24576),
    "Standard_NC48ads_A100_v4": (2, "NVIDIA-A100-PCIE-80GB", 81920),
    "Standard_NC96ads_A100_v4": (4, "NVIDIA-A100-PCIE-80GB", 81920),
    "Standard_NC40ads_H100_v5": (1, "NVIDIA-H100-NVL", 96256),
}


def digest(*parts: str, size: int = 10) -> str:
    return hashlib.sha256("/".join(parts).encode()).hexdigest()[:size]


def ws_key(ws: Obj) -> tuple[str, str, str]:
    meta = ws["metadata"]
    return meta["namespace"], meta["name"], meta.get("uid", "")


def sku(ws: Obj) -> tuple[str, int, str, int]:
    wanted = ws.get("resource", {}).get("instanceType") or next(iter(SKUS))
    return (wanted, *SKUS.get(wanted, (1, "NVIDIA-A100-PCIE-80GB", 81920)))


def preset_name(ws: Obj) -> str:
    return ((ws.get("inference") or ws.get("tuning") or {}).get("preset") or {}).get("name", "custom-template")


def meta(name: str, namespace: str | None, ws: Obj, *, labels: Obj | None = None, owner: Obj | None = None) -> Obj:
    ns, ws_name, _uid = ws_key(ws)
    out: Obj = {
        "name": name,
        "labels": {WS_LABEL: ws_name, WS_NS_LABEL: ns, PLAYED_BY: STANDIN, **(labels or {})},
        "annotations": {PLAYED_BY: STANDIN},
    }
    if namespace:
        out["namespace"] = namespace
    if owner:
        out["ownerReferences"] = [owner]
    return out


def owner_ref(obj: Obj, api_version: str, kind: str) -> Obj:
    ref = {"apiVersion": api_version, "kind": kind, "name": obj["metadata"]["name"], "uid": obj["metadata"]["uid"]}
    return {**ref, "controller": True, "blockOwnerDeletion": True}


def workspace_owner(ws: Obj) -> Obj:
    return owner_ref(ws, "kaito.sh/v1beta1", "Workspace")


# --- Workspace metadata KAITO writes -------------------------------------------------------------------------------
def workspace_metadata_patch(ws: Obj, step: str) -> Obj:
    """KAITO's finalizer and revision annotations, plus the stand-in's step (to resume after a restart)."""
    finalizers = ws["metadata"].get("finalizers") or []
    spec = repr([ws.get("resource"), ws.get("inference"), ws.get("tuning")])
    annotations = {"workspace.kaito.io/hash": digest(spec, size=64), "workspace.kaito.io/revision": "1"}
    return {
        "metadata": {
            "finalizers": finalizers if FINALIZER in finalizers else [*finalizers, FINALIZER],
            "annotations": {**annotations, PLAYED_BY: STANDIN, "kaito-portal.dev/standin-step": step},
        }
    }


# --- nodes ------------------------------------------------------------------------------------------------------
def nodeclaim_name(ws: Obj, index: int = 0) -> str:
    return "ws" + digest(*ws_key(ws), *([str(index)] if index else []), size=9)


def node_names(ws: Obj, count: int) -> list[str]:
    stem = nodeclaim_name(ws) if ws.get("resource", {}).get("instanceType") else "gpu" + digest(*ws_key(ws), size=6)
    number = int(digest(*ws_key(ws), "vmss", size=7), 16) % 10**8
    return [f"aks-{stem}-{number:08d}-vmss{i:06d}" for i in range(count)]


def nodeclaim(ws: Obj, index: int = 0) -> Obj:
    instance_type = ws["resource"]["instanceType"]
    labels = {"karpenter.sh/nodepool": "kaito", INSTANCE_TYPE_LABEL: instance_type, **_match_labels(ws)}
    requirement = {"key": INSTANCE_TYPE_LABEL, "operator": "In", "values": [instance_type]}
    return {
        "apiVersion": "karpenter.sh/v1",
        "kind": "NodeClaim",
        "metadata": {
            **meta(nodeclaim_name(ws, index), None, ws, labels=labels),
            "annotations": {PLAYED_BY: STANDIN, "karpenter.sh/do-not-disrupt": "true"},
        },
        "spec": {
            "nodeClassRef": {"group": "karpenter.azure.com", "kind": "AKSNodeClass", "name": "default"},
            "requirements": [requirement],
            "taints": [{"key": "sku", "value": "gpu", "effect": "NoSchedule"}],
        },
    }


def nodeclaim_status(node_name: str, ready: bool) -> Obj:
    state = "True" if ready else "Unknown"
    conds = [
        {
            "type": t,
            "status": state,
            "reason": t if ready else "AwaitingReconciliation",
            "message": "",
            "lastTransitionTime": now_rfc3339(),
        }
        for t in ("Launched", "Registered", "Initialized", "Ready")
    ]
    return {"conditions": conds, "nodeName": node_name if ready else ""}


def _match_labels(ws: Obj) -> Obj:
    return dict((ws.get("resource", {}).get("labelSelector") or {}).get("matchLabels") or {})


def node(ws: Obj, name: str) -> Obj:
    instance_type, gpus, product, mem = sku(ws)
    labels = {
        **_match_labels(ws),
        "kubernetes.io/hostname": name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        INSTANCE_TYPE_LABEL: instance_type,
        "accelerator": "nvidia",
        "nvidia.com/gpu.product": product,
        "nvidia.com/gpu.count": str(gpus),
        "nvidia.com/gpu.memory": str(mem),
    }
    if ws.get("resource", {}).get("instanceType"):
        labels["karpenter.sh/nodepool"] = "kaito"
    return {"apiVersion": "v1", "kind": "Node", "metadata": meta(name, None, ws, labels=labels), "spec": {}}


def node_status(ws: Obj, *, plugin_ready: bool, kubelet: tuple[str, int] | None) -> Obj:
    _it, gpus, _product, _mem = sku(ws)
    capacity = {"cpu": "24", "memory": "226Gi", "pods": "110", "ephemeral-storage": "1Ti"}
    allocatable = {**capacity, GPU: str(gpus)} if plugin_ready else capacity
    conds = [
        ("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
        ("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
        ("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
        ("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
    ]
    now = now_rfc3339()
    status: Obj = {
        "capacity": {**capacity, GPU: str(gpus)},
        "allocatable": allocatable,
        "conditions": [
            {"type": t, "status": s, "reason": r, "message": m, "lastHeartbeatTime": now, "lastTransitionTime": now}
            for t, s, r, m in conds
        ],
        "nodeInfo": {
            "kubeletVersion": "v1.34.4",
            "containerRuntimeVersion": "containerd://1.7.29-1",
            "osImage": "Ubuntu 22.04.5 LTS",
            "kernelVersion": "5.15.0-1092-azure",
            "operatingSystem": "linux",
            "architecture": "amd64",
            "kubeProxyVersion": "",
            "machineID": "",
            "systemUUID": "",
            "bootID": "",
        },
    }
    # Only an InternalIP: the apiserver's default --kubelet-preferred-address-types tries Hostname first.
    address = kubelet[0] if kubelet else "10.224.0." + str(int(digest(*ws_key(ws), size=2), 16) % 250 + 4)
    status["addresses"] = [{"type": "InternalIP", "address": address}]
    status["daemonEndpoints"] = {"kubeletEndpoint": {"Port": kubelet[1] if kubelet else 10250}}
    return status


# --- inference ------------------------------------------------------------------------------------------------
def service(ws: Obj) -> Obj:
    ns, name, _uid = ws_key(ws)
    ports = [
        {"name": "http", "port": 80, "targetPort": 5000, "protocol": "TCP"},
        {"name": "ray", "port": 6379, "targetPort": 6379, "protocol": "TCP"},
        {"name": "dashboard", "port": 8265, "targetPort": 8265, "protocol": "TCP"},
    ]
    enable_lb = ws["metadata"].get("annotations", {}).get("kaito.sh/enablelb") == "True"
    if runtime(ws) == "vllm" and not enable_lb:
        ports.append({"name": "kv-events", "port": 5557, "targetPort": 5557, "protocol": "TCP"})
    selector = {WS_LABEL: name, "statefulset.kubernetes.io/pod-name": f"{name}-0"}
    spec = {
        "type": "LoadBalancer" if enable_lb else "ClusterIP",
        "selector": selector,
        "ports": ports,
        "publishNotReadyAddresses": True,
    }
    return {"metadata": meta(name, ns, ws, owner=workspace_owner(ws)), "spec": spec}


def headless_service(ws: Obj) -> Obj:
    ns, name, _uid = ws_key(ws)
    spec = {"clusterIP": "None", "selector": {WS_LABEL: name}, "publishNotReadyAddresses": True}
    return {"metadata": meta(f"{name}-headless", ns, ws, owner=workspace_owner(ws)), "spec": spec}


def _target(ws: Obj, pod: Obj) -> Obj:
    return {"kind": "Pod", "namespace": ws_key(ws)[0], "name": pod["metadata"]["name"], "uid": pod["metadata"]["uid"]}


def endpoints(ws: Obj, pod: Obj | None = None, ip: str = "", port: int = 5000) -> Obj:
    """What the endpoints controller writes for <ws>: empty until a pod is published; the service proxy dials it."""
    ns, name, _uid = ws_key(ws)
    address = {"ip": ip, "nodeName": pod["spec"].get("nodeName"), "targetRef": _target(ws, pod)} if pod else None
    subsets = [{"addresses": [address], "ports": [{"name": "http", "port": port, "protocol": "TCP"}]}] if pod else []
    return {"metadata": meta(name, ns, ws), "subsets": subsets}


def endpoint_slice(ws: Obj, pod: Obj | None = None, ip: str = "", port: int = 5000) -> Obj:
    ns, name, _uid = ws_key(ws)
    labels = {"kubernetes.io/service-name": name, "endpointslice.kubernetes.io/managed-by": STANDIN}
    conditions = {"ready": True, "serving": True, "terminating": False}
    endpoint = {"addresses": [ip], "conditions": conditions, "nodeName": pod["spec"].get("nodeName"),
                "targetRef": _target(ws, pod)} if pod else None  # fmt: skip
    return {
        "metadata": meta(f"{name}-{STANDIN}", ns, ws, labels=labels),
        "addressType": "IPv4",
        "endpoints": [endpoint] if endpoint else [],
        "ports": [{"name": "http", "port": port, "protocol": "TCP"}],
    }


def _tolerations() -> list[Obj]:
    return [
        {"key": GPU, "operator": "Exists", "effect": "NoSchedule"},
        {"key": "sku", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"},
    ]


def inference_container(ws: Obj, gpus: int, benchmark: bool) -> Obj:
    _ns, name, _uid = ws_key(ws)
    model = preset_name(ws)
    command = (
        f"python3 /workspace/vllm/inference_api.py --model {model} --download-dir /workspace/weights "
        f"--served-model-name {served_name(ws) or model} --max-model-len auto --gpu-memory-utilization 0.84 "
        f"--tensor-parallel-size {gpus} --dtype bfloat16 --trust-remote-code"
    )
    health = {"httpGet": {"path": "/health", "port": 5000}, "periodSeconds": 10}
    container: Obj = {
        "name": name,
        "image": BASE_IMAGE,
        "command": ["/bin/sh", "-c", command],
        "ports": [{"name": "http", "containerPort": 5000}],
        "resources": {"requests": {GPU: str(gpus)}, "limits": {GPU: str(gpus)}},
        "readinessProbe": health,
        "livenessProbe": health,
        "env": [{"name": "VLLM_USE_FLASHINFER_SAMPLER", "value": "0"}],
    }
    if benchmark:
        container["startupProbe"] = {
            "exec": {"command": ["python3", "/workspace/vllm/benchmark_entrypoint.py"]},
            "periodSeconds": 30,
            "failureThreshold": 360,
        }
    return container


def statefulset(ws: Obj, replicas: int, benchmark: bool) -> Obj:
    ns, name, _uid = ws_key(ws)
    _it, gpus, _p, _m = sku(ws)
    template = {
        "metadata": {"labels": {WS_LABEL: name}},
        "spec": {"containers": [inference_container(ws, gpus, benchmark)], "tolerations": _tolerations()},
    }
    spec = {
        "replicas": replicas,
        "selector": {"matchLabels": {WS_LABEL: name}},
        "serviceName": f"{name}-headless",
        "podManagementPolicy": "Parallel",
        "template": template,
    }
    out = {"metadata": meta(name, ns, ws, owner=workspace_owner(ws)), "spec": spec}
    out["metadata"]["annotations"]["workspace.kaito.io/revision"] = "1"
    return out


def inference_pod(ws: Obj, sts: Obj, index: int) -> Obj:
    ns, name, _uid = ws_key(ws)
    pod_name = f"{name}-{index}"
    labels = {
        "statefulset.kubernetes.io/pod-name": pod_name,
        "apps.kubernetes.io/pod-index": str(index),
        "controller-revision-hash": f"{name}-{digest(name, size=10)}",
    }
    spec = {**sts["spec"]["template"]["spec"], "hostname": pod_name, "subdomain": f"{name}-headless"}
    owner = owner_ref(sts, "apps/v1", "StatefulSet")
    return {"metadata": meta(pod_name, ns, ws, labels=labels, owner=owner), "spec": spec}


# --- tuning ----------------------------------------------------------------------------------------------------
def tuning_containers(ws: Obj) -> tuple[list[Obj], list[Obj]]:
    """(init containers, containers) of KAITO's tuning pod (§2.2), commands abridged."""
    _ns, name, _uid = ws_key(ws)
    tuning = ws.get("tuning") or {}
    _it, gpus, _p, _m = sku(ws)
    artifact = "mcr.microsoft.com/aks/kaito/kaito-" + preset_name(ws).split("/")[-1].lower() + ":0.2.0"
    inits = [
        {
            "name": "model-weights-downloader",
            "image": ORAS_PULL_IMAGE,
            "command": ["oras", "pull", artifact, "-o", "/workspace/weights"],
        }
    ]
    source = tuning.get("input") or {}
    if source.get("urls"):
        inits.append(
            {
                "name": "data-downloader",
                "image": CURL_IMAGE,
                "command": ["sh", "-c", "/data-downloader.sh"],
                "args": list(source["urls"]),
            }
        )
    elif source.get("image"):
        inits.append({"name": "puller", "image": SKOPEO_IMAGE, "args": [source["image"], "/mnt/data"]})
    launch = (
        f"cd /workspace/tfs/ && python3 metrics_server.py & accelerate launch --num_processes={gpus} "
        "/workspace/tfs/fine_tuning.py"
    )
    main = {
        "name": name,
        "image": BASE_IMAGE,
        "command": ["/bin/sh", "-c", launch],
        "resources": {"requests": {GPU: str(gpus)}, "limits": {GPU: str(gpus)}},
        "env": [{"name": "PYTORCH_CUDA_ALLOC_CONF", "value": "expandable_segments:True"}],
    }
    containers = [main]
    destination = tuning.get("output") or {}
    if destination.get("image"):
        containers.append(
            {
                "name": "pusher",
                "image": ORAS_PUSH_IMAGE,
                "command": ["/bin/sh", "/pusher.sh"],
                "args": ["/mnt/results", destination["image"]],
            }
        )
        containers.append({"name": "pause", "image": PAUSE_IMAGE})
    return inits, containers


def job(ws: Obj) -> Obj:
    ns, name, _uid = ws_key(ws)
    inits, containers = tuning_containers(ws)
    pod_spec: Obj = {
        "restartPolicy": "Never",
        "initContainers": inits,
        "containers": containers,
        "tolerations": _tolerations(),
    }
    if len(containers) > 1:
        pod_spec["shareProcessNamespace"] = True
    spec = {"template": {"metadata": {"labels": {WS_LABEL: name}}, "spec": pod_spec}}
    out = {"metadata": meta(name, ns, ws, owner=workspace_owner(ws)), "spec": spec}
    out["metadata"]["annotations"]["workspace.kaito.io/revision"] = "1"
    return out


def tuning_pod(ws: Obj, job_obj: Obj) -> Obj:
    ns, name, _uid = ws_key(ws)
    suffix = "".join("bcdfghjklmnpqrstvwxz2456789"[int(c, 16)] for c in digest(job_obj["metadata"]["uid"], size=5))
    template = job_obj["spec"]["template"]
    labels = {
        **template["metadata"]["labels"],
        **job_obj["spec"]["selector"]["matchLabels"],
        "batch.kubernetes.io/job-name": name,
        "job-name": name,
    }
    owner = owner_ref(job_obj, "batch/v1", "Job")
    return {"metadata": meta(f"{name}-{suffix}", ns, ws, labels=labels, owner=owner), "spec": dict(template["spec"])}


def pod_ip(ws: Obj, index: int = 0) -> str:
    value = int(digest(*ws_key(ws), "pod", size=4), 16)
    return f"10.244.{value % 200 + 1}.{(value // 200) % 250 + 2 + index}"
