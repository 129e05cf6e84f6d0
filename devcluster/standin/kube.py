"""A small, retrying dict-in/dict-out layer over the `kubernetes` client for the stand-ins."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import urllib3
from kubernetes import client

Obj = dict[str, Any]
MERGE = "application/merge-patch+json"
TRANSIENT = {0, 429, 500, 502, 503, 504}
# kind -> (API attribute, method suffix, namespaced)
KINDS = {
    "Service": ("core", "namespaced_service", True),
    "Endpoints": ("core", "namespaced_endpoints", True),
    "Pod": ("core", "namespaced_pod", True),
    "Event": ("core", "namespaced_event", True),
    "Node": ("core", "node", False),
    "StatefulSet": ("apps", "namespaced_stateful_set", True),
    "Job": ("batch", "namespaced_job", True),
    "EndpointSlice": ("discovery", "namespaced_endpoint_slice", True),
}
CUSTOM = {
    "Workspace": ("kaito.sh", "v1beta1", "workspaces", True),
    "NodeClaim": ("karpenter.sh", "v1", "nodeclaims", False),
}
log = logging.getLogger("kaito-standin")


class Stopped(Exception):
    """The stand-in is shutting down; abandon the current work."""


class Kube:
    """Calls retry transient failures (API server restarting, 5xx, 429) until they succeed or stop is set."""

    def __init__(self, api: client.ApiClient, stop: threading.Event, timeout: float = 15.0) -> None:
        self.api, self.stop, self.timeout = api, stop, timeout
        self.apis = {
            "core": client.CoreV1Api(api),
            "apps": client.AppsV1Api(api),
            "batch": client.BatchV1Api(api),
            "discovery": client.DiscoveryV1Api(api),
            "custom": client.CustomObjectsApi(api),
        }

    def _call(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        delay = 0.2
        while True:
            if self.stop.is_set():
                raise Stopped
            try:
                result = func(*args, _request_timeout=self.timeout, **kwargs)
                return result if isinstance(result, dict) else self.api.sanitize_for_serialization(result)
            except client.ApiException as err:
                if err.status not in TRANSIENT:
                    raise
                why = f"HTTP {err.status}"
            except (urllib3.exceptions.HTTPError, OSError) as err:
                why = type(err).__name__
            log.debug("retrying %s after %s", getattr(func, "__name__", func), why)
            self.stop.wait(delay)
            delay = min(delay * 2, 3.0)

    def _method(self, verb: str, kind: str) -> tuple[Callable[..., Any], tuple[Any, ...], bool]:
        if kind in CUSTOM:
            group, version, _plural, namespaced = CUSTOM[kind]
            scope = "namespaced" if namespaced else "cluster"
            suffix = "_status" if verb == "patch_status" else ""
            verb = "patch" if verb == "patch_status" else verb
            return getattr(self.apis["custom"], f"{verb}_{scope}_custom_object{suffix}"), (group, version), namespaced
        api, suffix, namespaced = KINDS[kind]
        if verb == "patch_status":
            return getattr(self.apis[api], f"patch_{suffix}_status"), (), namespaced
        return getattr(self.apis[api], f"{verb}_{suffix}"), (), namespaced

    def _args(self, kind: str, namespace: str | None, name: str | None, namespaced: bool) -> tuple[Any, ...]:
        if kind in CUSTOM:
            plural = CUSTOM[kind][2]
            parts = ([namespace] if namespaced else []) + [plural] + ([name] if name else [])
            return tuple(parts)
        return tuple(x for x in (name, namespace if namespaced else None) if x is not None)

    def create(self, kind: str, obj: Obj) -> Obj:
        """Create obj; if it exists already, return the stored one (creates are idempotent)."""
        func, prefix, namespaced = self._method("create", kind)
        namespace = obj["metadata"].get("namespace")
        try:
            if kind in CUSTOM:
                return self._call(func, *prefix, *self._args(kind, namespace, None, namespaced), obj)
            return self._call(func, *((namespace,) if namespaced else ()), obj)
        except client.ApiException as err:
            if err.status != 409:
                raise
        found = self.read(kind, namespace, obj["metadata"]["name"])
        if found is None:  # deleted in between: try once more
            return self.create(kind, obj)
        return found

    def read(self, kind: str, namespace: str | None, name: str) -> Obj | None:
        func, prefix, namespaced = self._method("get" if kind in CUSTOM else "read", kind)
        try:
            return self._call(func, *prefix, *self._args(kind, namespace, name, namespaced))
        except client.ApiException as err:
            if err.status == 404:
                return None
            raise

    def patch(self, kind: str, namespace: str | None, name: str, body: Obj, *, status: bool = False) -> Obj | None:
        """JSON merge patch (of the status subresource if status); None when the object is gone."""
        func, prefix, namespaced = self._method("patch_status" if status else "patch", kind)
        try:
            args = (*prefix, *self._args(kind, namespace, name, namespaced), body)
            return self._call(func, *args, _content_type=MERGE)
        except client.ApiException as err:
            if err.status == 404:
                return None
            raise

    def delete(self, kind: str, namespace: str | None, name: str) -> bool:
        func, prefix, namespaced = self._method("delete", kind)
        # A Pod bound to a node waits for its kubelet to confirm the deletion, unless the grace period is 0.
        extra: dict[str, Any] = {"grace_period_seconds": 0} if kind == "Pod" else {}
        if kind not in CUSTOM:  # batch/v1 Jobs default to orphaning, which needs the absent garbage collector
            extra["propagation_policy"] = "Background"
        try:
            self._call(func, *prefix, *self._args(kind, namespace, name, namespaced), **extra)
        except client.ApiException as err:
            if err.status == 404:
                return False
            raise
        return True

    def list(self, kind: str, namespace: str | None = None, selector: str = "") -> list[Obj]:
        if kind in CUSTOM:
            group, version, plural, _namespaced = CUSTOM[kind]
            if namespace:
                func = self.apis["custom"].list_namespaced_custom_object
                result = self._call(func, group, version, namespace, plural, label_selector=selector)
            else:
                func = self.apis["custom"].list_cluster_custom_object
                result = self._call(func, group, version, plural, label_selector=selector)
            return list(result.get("items", []))
        api, suffix, namespaced = KINDS[kind]
        if namespaced and namespace:
            result = self._call(getattr(self.apis[api], f"list_{suffix}"), namespace, label_selector=selector)
        else:
            name = "list_" + suffix.replace("namespaced_", "") + ("_for_all_namespaces" if namespaced else "")
            result = self._call(getattr(self.apis[api], name), label_selector=selector)
        return list(result.get("items", []))


def wait(stop: threading.Event, seconds: float) -> None:
    """Sleep unless the stand-in stops meanwhile."""
    if stop.wait(seconds):
        raise Stopped
