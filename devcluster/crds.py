"""Apply the project's copy of KAITO's CRDs and wait until the apiserver serves them."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client

CRD_DIR = Path(__file__).resolve().parent / "crds"


def crd_files(crd_dir: Path = CRD_DIR) -> list[Path]:
    """All CRD manifests: KAITO's own, then the third-party ones its chart vendors."""
    return sorted(crd_dir.glob("*.yaml")) + sorted(crd_dir.glob("third-party/*.yaml"))


def load_crds(files: list[Path]) -> list[dict[str, Any]]:
    """Parse every CustomResourceDefinition document in files."""
    docs: list[dict[str, Any]] = []
    for path in files:
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") == "CustomResourceDefinition":
                docs.append(doc)
    return docs


def apply_crds(api: client.ApiClient, docs: list[dict[str, Any]]) -> list[str]:
    """Create each CRD, or replace it if it exists (a kept sandbox), and return their names."""
    ext = client.ApiextensionsV1Api(api)
    names = []
    for doc in docs:
        name = doc["metadata"]["name"]
        try:
            ext.create_custom_resource_definition(doc)
        except client.ApiException as err:
            if err.status != 409:
                raise RuntimeError(f"creating CRD {name} failed: {err.status} {err.body}") from err
            current = ext.read_custom_resource_definition(name)
            body = {
                **doc,
                "metadata": {**doc["metadata"], "resourceVersion": current.metadata.resource_version},
            }
            ext.replace_custom_resource_definition(name, body)
        names.append(name)
    return names


def wait_established(api: client.ApiClient, names: list[str], timeout: float = 60.0) -> None:
    """Wait until every CRD has Established=True and NamesAccepted=True."""
    ext = client.ApiextensionsV1Api(api)
    deadline = time.monotonic() + timeout
    pending = list(names)
    while pending:
        still = []
        for name in pending:
            conds = ext.read_custom_resource_definition(name).status.conditions or []
            ok = {c.type for c in conds if c.status == "True"}
            if not {"Established", "NamesAccepted"} <= ok:
                still.append(name)
        pending = still
        if pending and time.monotonic() > deadline:
            raise TimeoutError(f"CRDs not Established after {timeout:.0f}s: {', '.join(pending)}")
        if pending:
            time.sleep(0.1)
