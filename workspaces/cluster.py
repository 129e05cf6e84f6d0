"""The only module that talks to Kubernetes: connect, apply, watch, delete, Events, logs, leases, endpoints."""

from __future__ import annotations

import base64
import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import urllib3
from azure.core.credentials import TokenCredential
from azure.core.exceptions import HttpResponseError
from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

from workspaces.aks import AksCluster, aks_kubeconfig
from workspaces.chat import Endpoint
from workspaces.kaito.manifests import GROUP, PLURAL, VERSION
from workspaces.kaito.spec import MANAGED_BY, MANAGED_BY_LABEL

logger = logging.getLogger(__name__)
FIELD_MANAGER = "kaito-portal"
MANAGED_SELECTOR = f"{MANAGED_BY_LABEL}={MANAGED_BY}"
TIMEOUT = (5, 30)  # connect, read seconds for ordinary calls


class ClusterError(Exception):
    """A Kubernetes call failed; `message` is fit to show a user."""

    status: int | None = None

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


class ClusterUnavailable(ClusterError):
    """Unreachable, timed out or 5xx: keep the state, retry later."""


class ClusterConflict(ClusterError):
    """409: someone else changed the object or owns the fields."""


class ClusterInvalid(ClusterError):
    """400/422: the API server (CRD schema or admission) refused the object; retrying will not help."""


class ClusterNotFound(ClusterError):
    """404."""


class ClusterForbidden(ClusterError):
    """401/403: the portal's identity may not do this."""


class WatchExpired(ClusterError):
    """410 Gone: the resourceVersion is too old; list again."""


def _server_message(exc: ApiException) -> str:
    try:
        return json.loads(exc.body or "{}").get("message") or exc.reason or str(exc.status)
    except (TypeError, ValueError):
        return str(exc.reason or exc.status)


def translate(exc: Exception) -> ClusterError:
    """One of the portal's cluster exceptions for any client failure."""
    if isinstance(exc, ClusterError):
        return exc
    if isinstance(exc, ApiException):
        message, status = _server_message(exc), exc.status
        kind = {
            404: ClusterNotFound,
            409: ClusterConflict,
            410: WatchExpired,
            401: ClusterForbidden,
            403: ClusterForbidden,
            400: ClusterInvalid,
            422: ClusterInvalid,
        }.get(status)
        if status == 500 and "failed to create typed patch object" in message:
            # Server-side apply reports a value of the wrong type for the CRD's schema as a 500.
            kind = ClusterInvalid
        if kind is None:
            kind = ClusterUnavailable if status is None or status >= 500 or status == 429 else ClusterInvalid
        return kind(message, status=status)
    if isinstance(exc, urllib3.exceptions.HTTPError | OSError | TimeoutError):
        return ClusterUnavailable(f"The cluster is unreachable: {exc}")
    return ClusterUnavailable(f"Unexpected cluster error: {exc!r}")


def _json_body(response: Any) -> dict[str, Any]:
    status = getattr(response, "status", 200)
    body = response.data
    if not 200 <= status < 300:
        raise translate(ApiException(status=status, reason=getattr(response, "reason", ""))) from None
    return json.loads(body)


@dataclass(frozen=True)
class ConnectionSettings:
    kubeconfig: str = ""
    context: str = ""
    aks: AksCluster | None = None
    inference_url: str = ""  # development override, e.g. "http://127.0.0.1:9000" or with {name}/{namespace}
    sandbox: bool = False
    azure_credential: TokenCredential | None = None  # None: DefaultAzureCredential
    arm_ca_bundle: str = ""  # extra CA file for the ARM endpoint (a TLS-inspecting proxy, a local stand-in)


class Cluster:
    """A connected cluster. Methods raise ClusterError subclasses, never client exceptions."""

    def __init__(self, api_client: client.ApiClient, *, in_cluster: bool, settings: ConnectionSettings) -> None:
        self.api = api_client
        self.in_cluster = in_cluster
        self.settings = settings
        self.custom = client.CustomObjectsApi(api_client)
        self.core = client.CoreV1Api(api_client)
        self.coordination = client.CoordinationV1Api(api_client)

    @property
    def server(self) -> str:
        return self.api.configuration.host

    def close(self) -> None:
        self.api.close()

    def _call(self, func: Any, *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("_request_timeout", TIMEOUT)
        try:
            return func(*args, **kwargs)
        except Exception as exc:
            raise translate(exc) from exc

    # -- objects ---------------------------------------------------------------------------------
    def apply(self, manifest: dict[str, Any], *, force: bool = False, dry_run: bool = False) -> dict[str, Any]:
        """Server-side apply as field manager kaito-portal: only the fields the portal sets are its own."""
        kind, meta = manifest["kind"], manifest["metadata"]
        options = {
            "field_manager": FIELD_MANAGER,
            "force": force,
            "dry_run": "All" if dry_run else None,
            "_content_type": "application/apply-patch+yaml",
            # The generated client maps only 200 to a body, but an apply that creates answers 201.
            "_preload_content": False,
        }
        if kind == "Workspace":
            args = (GROUP, VERSION, meta["namespace"], PLURAL, meta["name"], manifest)
            response = self._call(self.custom.patch_namespaced_custom_object, *args, **options)
        else:
            method = {"Secret": self.core.patch_namespaced_secret, "ConfigMap": self.core.patch_namespaced_config_map}
            response = self._call(method[kind], meta["name"], meta["namespace"], manifest, **options)
        return _json_body(response)

    def get_workspace(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return self._call(self.custom.get_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL, name)
        except ClusterNotFound:
            return None

    def list_workspaces(self, *, label_selector: str = MANAGED_SELECTOR) -> tuple[list[dict[str, Any]], str]:
        """Every managed Workspace in the cluster and the list's resourceVersion to watch from."""
        result = self._call(
            self.custom.list_cluster_custom_object, GROUP, VERSION, PLURAL, label_selector=label_selector
        )
        return result.get("items", []), result["metadata"]["resourceVersion"]

    def watch_workspaces(
        self, *, resource_version: str, timeout_seconds: int, label_selector: str = MANAGED_SELECTOR
    ) -> Iterator[tuple[str, dict[str, Any]]]:
        """(event type, object) from resource_version on; ends after timeout_seconds; 410 → WatchExpired."""
        stream = watch.Watch()
        try:
            for event in stream.stream(
                self.custom.list_cluster_custom_object,
                GROUP,
                VERSION,
                PLURAL,
                label_selector=label_selector,
                resource_version=resource_version,
                timeout_seconds=timeout_seconds,
                allow_watch_bookmarks=True,
                _request_timeout=(TIMEOUT[0], timeout_seconds + 10),
            ):
                yield event["type"], event["raw_object"]
        except Exception as exc:
            raise translate(exc) from exc
        finally:
            stream.stop()

    def delete(self, kind: str, namespace: str, name: str) -> bool:
        """Delete an object; False when it was already gone."""
        try:
            if kind == "Workspace":
                self._call(
                    self.custom.delete_namespaced_custom_object,
                    GROUP,
                    VERSION,
                    namespace,
                    PLURAL,
                    name,
                    propagation_policy="Background",
                )
            else:
                method = getattr(self.core, f"delete_namespaced_{kind.lower().replace('configmap', 'config_map')}")
                self._call(method, name, namespace, propagation_policy="Background")
        except ClusterNotFound:
            return False
        return True

    def set_owner(self, manifest: dict[str, Any], owner: dict[str, Any]) -> None:
        """Let Kubernetes garbage-collect a Secret or ConfigMap with its Workspace."""
        reference = {
            "apiVersion": owner["apiVersion"],
            "kind": "Workspace",
            "name": owner["metadata"]["name"],
            "uid": owner["metadata"]["uid"],
        }
        self.apply({**manifest, "metadata": {**manifest["metadata"], "ownerReferences": [reference]}}, force=True)

    # -- what KAITO and Kubernetes say -------------------------------------------------------------
    def events(self, namespace: str, workspace: str) -> list[dict[str, Any]]:
        """Events about the Workspace, its Job and its pods (quota, image pulls, OOM, scheduling)."""
        names = {workspace} | {pod["metadata"]["name"] for pod in self.pods(namespace, workspace)}
        found = []
        for name in sorted(names):
            result = self._call(
                self.core.list_namespaced_event, namespace, field_selector=f"involvedObject.name={name}"
            )
            found += [self.api.sanitize_for_serialization(e) for e in result.items]
        return found

    def namespace_events(self, namespace: str) -> dict[str, list[dict[str, Any]]]:
        """All Events in a namespace grouped by workspace (its own, its Job's and its pods'): two calls in all."""
        owners = {}
        pods = self._call(self.core.list_namespaced_pod, namespace, label_selector="kaito.sh/workspace")
        for pod in pods.items:
            owners[pod.metadata.name] = pod.metadata.labels["kaito.sh/workspace"]
        grouped: dict[str, list[dict[str, Any]]] = {}
        for event in self._call(self.core.list_namespaced_event, namespace).items:
            name = event.involved_object.name
            grouped.setdefault(owners.get(name, name), []).append(self.api.sanitize_for_serialization(event))
        return grouped

    def pods(self, namespace: str, workspace: str) -> list[dict[str, Any]]:
        result = self._call(self.core.list_namespaced_pod, namespace, label_selector=f"kaito.sh/workspace={workspace}")
        return [self.api.sanitize_for_serialization(p) for p in result.items]

    def logs(self, namespace: str, pod: str, *, container: str, tail_lines: int = 200) -> str:
        return self._call(
            self.core.read_namespaced_pod_log,
            pod,
            namespace,
            container=container,
            tail_lines=tail_lines,
            timestamps=False,
        )

    def read_secret(self, namespace: str, name: str) -> dict[str, str]:
        """A Secret's data, base64-decoded (for checking an existing push secret; never shown)."""
        secret = self._call(self.core.read_namespaced_secret, name, namespace)
        return {k: base64.b64decode(v).decode(errors="replace") for k, v in (secret.data or {}).items()}

    # -- leader election ---------------------------------------------------------------------------
    def get_lease(self, namespace: str, name: str) -> client.V1Lease | None:
        try:
            return self._call(self.coordination.read_namespaced_lease, name, namespace)
        except ClusterNotFound:
            return None

    def create_lease(self, namespace: str, lease: client.V1Lease) -> client.V1Lease:
        return self._call(self.coordination.create_namespaced_lease, namespace, lease)

    def replace_lease(self, namespace: str, lease: client.V1Lease) -> client.V1Lease:
        """Optimistic: carries the resourceVersion it read, so two writers cannot both win (409)."""
        return self._call(self.coordination.replace_namespaced_lease, lease.metadata.name, namespace, lease)

    # -- reaching the model ------------------------------------------------------------------------
    def inference_endpoint(self, namespace: str, workspace: str) -> Endpoint:
        """Service DNS inside the cluster; the API server's service proxy with the portal's own credentials outside."""
        if self.settings.inference_url:
            return Endpoint(base_url=self.settings.inference_url.format(name=workspace, namespace=namespace))
        if self.in_cluster:
            return Endpoint(base_url=f"http://{workspace}.{namespace}.svc.cluster.local:80")
        cfg = self.api.configuration
        if cfg.refresh_api_key_hook:
            cfg.refresh_api_key_hook(cfg)
        headers = {}
        # The kubeconfig loader stores tokens under "BearerToken"; "authorization" is the older alias.
        token = cfg.get_api_key_with_prefix("BearerToken", alias="authorization")
        if token:
            headers["Authorization"] = token
        verify: bool | str = cfg.ssl_ca_cert or True if cfg.verify_ssl else False
        cert = (cfg.cert_file, cfg.key_file) if cfg.cert_file and cfg.key_file else None
        base = f"{cfg.host}/api/v1/namespaces/{namespace}/services/{workspace}:80/proxy"
        return Endpoint(base_url=base, headers=headers, verify=verify, cert=cert)

    def ensure_namespace(self, name: str) -> None:
        """Create a namespace if it is missing (the sandbox's team namespace)."""
        try:
            self._call(self.core.read_namespace, name)
        except ClusterNotFound:
            self._call(self.core.create_namespace, {"metadata": {"name": name}})

    def ping(self) -> str:
        """The server's version, or ClusterUnavailable."""
        info = self._call(client.VersionApi(self.api).get_code)
        return info.git_version


def _arm_error(aks: AksCluster, exc: HttpResponseError) -> ClusterError:
    """ARM refused the credentials call: one line that names the cluster (the SDK's text repeats over lines)."""
    detail = f"{exc.error.code}: {exc.error.message}" if exc.error else (exc.reason or str(exc.status_code))
    kind = ClusterForbidden if exc.status_code in (401, 403) else ClusterUnavailable
    where = f"AKS cluster {aks.name} (resource group {aks.resource_group}, subscription {aks.subscription_id})"
    return kind(f"Azure refused the credentials of {where}: {detail}", status=exc.status_code)


def connect(settings: ConnectionSettings) -> Cluster:
    """Connect from AKS settings, a kubeconfig, or the in-cluster service account, in that order."""
    configuration = client.Configuration()
    in_cluster = False
    try:
        if settings.aks is not None:
            options = {"connection_verify": settings.arm_ca_bundle} if settings.arm_ca_bundle else {}
            try:
                kubeconfig, tokens = aks_kubeconfig(settings.aks, credential=settings.azure_credential, **options)
            except HttpResponseError as exc:
                if exc.response is None:  # the credential failed before ARM was asked (ClientAuthenticationError)
                    raise
                raise _arm_error(settings.aks, exc) from exc
            if tokens is not None:
                # Replace kubelogin with bearer tokens from the same Azure credential.
                for user in kubeconfig.get("users", []):
                    user["user"] = {"token": tokens.token()}
            config.load_kube_config_from_dict(kubeconfig, client_configuration=configuration)
            if tokens is not None:
                # Only after loading: the loader installs its own hook, which re-sets the first (static)
                # token under "BearerToken", the key the client reads before "authorization".
                configuration.refresh_api_key_hook = lambda cfg: cfg.api_key.update(
                    BearerToken=f"Bearer {tokens.token()}"
                )
        elif settings.kubeconfig:
            config.load_kube_config(
                settings.kubeconfig, context=settings.context or None, client_configuration=configuration
            )
        elif os.environ.get("KUBERNETES_SERVICE_HOST"):
            config.load_incluster_config(client_configuration=configuration)
            in_cluster = True
        else:
            raise ClusterUnavailable("No cluster is configured: set KUBECONFIG, or the AKS_* settings.")
    except ClusterError:
        raise
    except Exception as exc:
        raise ClusterUnavailable(f"Cannot load the cluster configuration: {exc}") from exc
    configuration.retries = 1  # fail fast; the reconciler retries with backoff
    return Cluster(client.ApiClient(configuration), in_cluster=in_cluster, settings=settings)
