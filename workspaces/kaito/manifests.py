"""Pure manifest builders: the exact objects the portal applies for one request, in apply order."""

from __future__ import annotations

import base64
import json
from typing import Any

import yaml

from workspaces.kaito.spec import (
    MANAGED_BY,
    MANAGED_BY_LABEL,
    NODE_LABEL,
    REQUEST_LABEL,
    REQUESTER_ANNOTATION,
    RUNTIME_ANNOTATION,
    TEAM_LABEL,
    RegistryCredentials,
    WorkspaceSpec,
    hf_token_secret_name,
)

GROUP = "kaito.sh"
VERSION = "v1beta1"
PLURAL = "workspaces"
MASK = "•••••• (hidden)"
Manifest = dict[str, Any]


def _labels(spec: WorkspaceSpec) -> dict[str, str]:
    labels = {MANAGED_BY_LABEL: MANAGED_BY}
    if spec.request_id is not None:
        labels[REQUEST_LABEL] = str(spec.request_id)
    if spec.team:
        labels[TEAM_LABEL] = spec.team
    return labels


def _metadata(spec: WorkspaceSpec, name: str) -> dict[str, Any]:
    return {"name": name, "namespace": spec.namespace, "labels": _labels(spec)}


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _pvc(claim: str) -> dict[str, Any]:
    return {"persistentVolumeClaim": {"claimName": claim}}


def _inference(spec: WorkspaceSpec) -> dict[str, Any]:
    preset: dict[str, Any] = {"name": spec.preset}
    if spec.hf_token_secret:
        preset["presetOptions"] = {"modelAccessSecret": spec.hf_token_secret}
    inference: dict[str, Any] = {"preset": preset}
    if spec.inference_config:
        inference["config"] = spec.inference_config_name
    if spec.adapters:
        inference["adapters"] = []
        for adapter in spec.adapters:
            source: dict[str, Any] = {"name": adapter.name, "image": adapter.image}
            if adapter.pull_secrets:
                source["imagePullSecrets"] = list(adapter.pull_secrets)
            entry: dict[str, Any] = {"source": source}
            if adapter.strength:
                entry["strength"] = adapter.strength
            inference["adapters"].append(entry)
    return inference


def _tuning(spec: WorkspaceSpec) -> dict[str, Any]:
    tuning: dict[str, Any] = {"preset": {"name": spec.preset}, "method": spec.method}
    if spec.training_config:
        tuning["config"] = spec.training_config_name
    if spec.input_urls:
        tuning["input"] = {"urls": list(spec.input_urls)}
    elif spec.input_image:
        tuning["input"] = {"image": spec.input_image}
        if spec.input_image_pull_secrets:
            tuning["input"]["imagePullSecrets"] = list(spec.input_image_pull_secrets)
    elif spec.input_pvc:
        tuning["input"] = {"volumeSource": _pvc(spec.input_pvc)}
    if spec.output_image:
        tuning["output"] = {"image": spec.output_image, "imagePushSecret": spec.output_push_secret}
    elif spec.output_pvc:
        tuning["output"] = {"volumeSource": _pvc(spec.output_pvc)}
    return tuning


def workspace_manifest(spec: WorkspaceSpec) -> Manifest:
    """The kaito.sh/v1beta1 Workspace; its fields are top level, there is no `spec:`."""
    metadata = _metadata(spec, spec.name)
    annotations = {}
    if spec.kind == "inference" and spec.runtime == "transformers":
        annotations[RUNTIME_ANNOTATION] = "transformers"
    if spec.requester:
        annotations[REQUESTER_ANNOTATION] = spec.requester
    if annotations:
        metadata["annotations"] = annotations
    match_labels = dict(spec.node_selector) if spec.node_selector else {NODE_LABEL: spec.name}
    resource: dict[str, Any] = {"labelSelector": {"matchLabels": match_labels}}
    if spec.instance_type:
        resource["instanceType"] = spec.instance_type
    # resource.count is deprecated and ignored by vLLM (the estimator sizes it); the Transformers
    # runtime still reads it, and tuning requires 1.
    if spec.kind == "inference" and spec.runtime == "transformers":
        resource["count"] = spec.node_count
    manifest: Manifest = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "Workspace", "metadata": metadata}
    manifest["resource"] = resource
    manifest[spec.kind] = _inference(spec) if spec.kind == "inference" else _tuning(spec)
    return manifest


def config_map_manifests(spec: WorkspaceSpec) -> list[Manifest]:
    maps = []
    if spec.kind == "inference" and spec.inference_config:
        maps.append((spec.inference_config_name, "inference_config.yaml", spec.inference_config))
    if spec.kind == "tuning" and spec.training_config:
        maps.append((spec.training_config_name, "training_config.yaml", spec.training_config))
    return [
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": _metadata(spec, name), "data": {key: text}}
        for name, key, text in maps
    ]


def hf_token_secret_manifest(spec: WorkspaceSpec, token: str) -> Manifest:
    """Opaque Secret with key HF_TOKEN, the shape presetOptions.modelAccessSecret expects."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": _metadata(spec, hf_token_secret_name(spec.name)),
        "type": "Opaque",
        "data": {"HF_TOKEN": _b64(token)},
    }


def dockerconfigjson(credentials: RegistryCredentials) -> str:
    auth = _b64(f"{credentials.username}:{credentials.password}")
    entry = {"username": credentials.username, "password": credentials.password, "auth": auth}
    return json.dumps({"auths": {credentials.server: entry}}, separators=(",", ":"))


def push_secret_manifest(spec: WorkspaceSpec, credentials: RegistryCredentials) -> Manifest:
    """kubernetes.io/dockerconfigjson Secret: KAITO mounts .dockerconfigjson into the pusher as config.json."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": _metadata(spec, spec.output_push_secret),
        "type": "kubernetes.io/dockerconfigjson",
        "data": {".dockerconfigjson": _b64(dockerconfigjson(credentials))},
    }


def manifests(
    spec: WorkspaceSpec, *, hf_token: str | None = None, registry: RegistryCredentials | None = None
) -> list[Manifest]:
    """Everything to apply, in order: Secrets and ConfigMaps first, since the Workspace names them."""
    objects: list[Manifest] = []
    if hf_token is not None and spec.kind == "inference":
        objects.append(hf_token_secret_manifest(spec, hf_token))
    if registry is not None and spec.kind == "tuning":
        objects.append(push_secret_manifest(spec, registry))
    objects += config_map_manifests(spec)
    objects.append(workspace_manifest(spec))
    return objects


def masked(objects: list[Manifest]) -> list[Manifest]:
    """The same objects with every Secret value replaced, for previews, downloads and API answers."""
    result = []
    for obj in objects:
        if obj.get("kind") == "Secret":
            obj = {**obj, "data": dict.fromkeys(obj.get("data", {}), MASK)}
        result.append(obj)
    return result


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (the ConfigMaps' YAML files) as literal blocks, the way people write them."""


def _string(dumper: yaml.SafeDumper, text: str) -> yaml.ScalarNode:
    style = "|" if "\n" in text and not any(line != line.rstrip() for line in text.splitlines()) else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style=style)


_Dumper.add_representer(str, _string)


def to_yaml(objects: list[Manifest]) -> str:
    return yaml.dump_all(
        objects, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=1000, allow_unicode=True
    )
