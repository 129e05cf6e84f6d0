"""Helpers for tests that drive the stand-ins against a real control plane: Workspaces, waiting, status recording."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from kubernetes import client, watch

from devcluster.standin.kaito_logic import signature
from devcluster.standin.plays import SCENARIO, STEP

Obj = dict[str, Any]
GROUP, VERSION, PLURAL = "kaito.sh", "v1beta1", "workspaces"
TEST_LABEL = "kaito-portal.dev/standin-test"


def new_run_id() -> str:
    return uuid.uuid4().hex[:10]


def workspace(
    name: str,
    *,
    tuning: bool = False,
    scenario: str = "",
    instance_type: str = "Standard_NC24ads_A100_v4",
    run_id: str = "",
    annotations: Obj | None = None,
    managed: bool = False,
) -> Obj:
    """A v1beta1 Workspace like the portal's; managed adds its label (then the portal's own listings include it)."""
    notes = {**({SCENARIO: scenario} if scenario else {}), **(annotations or {})}
    labels = {
        **({"app.kubernetes.io/managed-by": "kaito-portal"} if managed else {}),
        **({TEST_LABEL: run_id} if run_id else {}),
    }
    body: Obj = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Workspace",
        "metadata": {"name": name, "labels": labels, "annotations": notes},
        "resource": {"labelSelector": {"matchLabels": {"apps": name}}},
    }
    if instance_type:
        body["resource"]["instanceType"] = instance_type
    preset = {"name": "phi-3-mini-128k-instruct"}
    if tuning:
        body["tuning"] = {
            "preset": preset,
            "method": "qlora",
            "input": {"urls": ["https://datasets.example.com/dolly-15k-oai-style.parquet"]},
            "output": {"image": "registry.example.com/adapters/phi-3-dolly:0.0.1", "imagePushSecret": "push-secret"},
        }
    else:
        body["inference"] = {"preset": preset}
    return body


def create(api: client.ApiClient, namespace: str, body: Obj) -> Obj:
    custom = client.CustomObjectsApi(api)
    return custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)  # type: ignore[no-any-return]


def get(api: client.ApiClient, namespace: str, name: str) -> Obj | None:
    try:
        return client.CustomObjectsApi(api).get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)  # type: ignore[no-any-return]
    except client.ApiException as err:
        if err.status == 404:
            return None
        raise


def wait_for(what: str, probe: Callable[[], Any], timeout: float = 45.0, every: float = 0.1) -> Any:
    """Poll probe until it returns something truthy; fail with the last value after timeout."""
    deadline, last = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last value: {last!r}")


def wait_step(api: client.ApiClient, namespace: str, name: str, step: str, timeout: float = 45.0) -> Obj:
    """Wait until the stand-in has finished `step` for the Workspace (its status is written by then)."""
    return wait_for(  # type: ignore[no-any-return]
        f"{namespace}/{name} step {step}",
        lambda: (ws := get(api, namespace, name)) and ws["metadata"].get("annotations", {}).get(STEP) == step and ws,
        timeout,
    )


class StatusRecorder:
    """Watches one Workspace from before it exists and records every distinct status signature, in order."""

    def __init__(self, api: client.ApiClient, namespace: str, name: str) -> None:
        self.api, self.namespace, self.name = api, namespace, name
        self.signatures: list[tuple[Any, ...]] = []
        self.statuses: list[Obj] = []
        self.error: Exception | None = None
        self._watch = watch.Watch()
        custom = client.CustomObjectsApi(api)
        listed = custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)
        self._version = listed["metadata"]["resourceVersion"]
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._record()
        except Exception as err:  # the test closed its client: recording is over
            self.error = err

    def _record(self) -> None:
        custom = client.CustomObjectsApi(self.api)
        for event in self._watch.stream(
            custom.list_namespaced_custom_object, GROUP, VERSION, self.namespace, PLURAL,
            field_selector=f"metadata.name={self.name}", resource_version=self._version, timeout_seconds=120,
        ):  # fmt: skip
            status = event["raw_object"].get("status", {})
            sig = signature(status)
            if not self.signatures or self.signatures[-1] != sig:
                self.signatures.append(sig)
                self.statuses.append(status)

    def stop(self, final: Obj | None = None, timeout: float = 10.0) -> list[tuple[Any, ...]]:
        """Stop recording, after the watch has delivered `final` (a Workspace read by the test) if given."""
        if final is not None:
            wanted = signature(final.get("status", {}))
            wait_for("the watch to catch up", lambda: wanted in self.signatures, timeout, every=0.05)
        self._watch.stop()
        return list(self.signatures)
