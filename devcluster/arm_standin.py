"""A local HTTPS stand-in for Azure Resource Manager's AKS listClusterUserCredential call, for tests."""

from __future__ import annotations

import base64
import datetime as dt
import json
import re
import shutil
import ssl
import tempfile
import threading
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import yaml

from devcluster import pki
from devcluster.httpserver import LocalServer, QuietHandler, ThreadedStandin, respond

API_VERSION = "2026-08-01"  # what azure-mgmt-containerservice 41.8 sends; anything else is refused
# "Azure Kubernetes Service AAD Server", the audience in AKS's Entra ID kubeconfigs (kubelogin --server-id).
AKS_AAD_SERVER_APP = "6dae42f8-4368-4678-94ff-3960e28e3630"
# "Azure Kubernetes Service AAD Client", the public client AKS puts in those kubeconfigs (kubelogin --client-id).
AKS_AAD_CLIENT_APP = "80faf920-1908-4b52-b5ef-a8e7bedfc67a"
_CREDENTIALS_PATH = re.compile(
    r"^/subscriptions/(?P<sub>[^/]+)/resourceGroups/(?P<rg>[^/]+)/providers/Microsoft\.ContainerService"
    r"/managedClusters/(?P<name>[^/]+)/listClusterUserCredential$",
    re.IGNORECASE,  # ARM matches paths and resource names case-insensitively
)


@dataclass(frozen=True)
class ArmRequest:
    """One request as the stand-in saw it (test tokens only, so the Authorization header is kept)."""

    method: str
    path: str
    query: dict[str, list[str]]
    authorization: str
    user_agent: str
    status: int


def _throwaway_tls(directory: Path) -> tuple[Path, Path, Path]:
    """A one-day CA and a 127.0.0.1/localhost serving certificate from it: (ca.crt, server.crt, server.key)."""
    day = dt.timedelta(days=1)
    ca, ca_key = pki.new_ca("kaito-portal arm-standin CA", validity=day, path_length=0)
    cert, key = pki.issue_serving_cert(ca, ca_key, "arm-standin", pki.local_sans(), validity=day)
    return (
        pki.write_cert(directory / "ca.crt", ca),
        pki.write_cert(directory / "server.crt", cert),
        pki.write_key(directory / "server.key", key),
    )


def local_accounts_kubeconfig(admin_kubeconfig: Path, *, name: str, resource_group: str) -> dict[str, Any]:
    """What AKS returns for a local-accounts cluster: a client certificate user, named the way AKS names it."""
    source = yaml.safe_load(admin_kubeconfig.read_text())
    user = f"clusterUser_{resource_group}_{name}"
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": name, "cluster": source["clusters"][0]["cluster"]}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": user}}],
        "current-context": name,
        "preferences": {},
        "users": [{"name": user, "user": source["users"][0]["user"]}],
    }


def entra_id_kubeconfig(
    server: str, ca_cert: Path, *, name: str, resource_group: str, tenant_id: str
) -> dict[str, Any]:
    """What AKS returns for an Entra ID cluster (format exec, the default): the user execs kubelogin."""
    user = f"clusterUser_{resource_group}_{name}"
    ca_data = base64.b64encode(ca_cert.read_bytes()).decode()
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": name, "cluster": {"server": server, "certificate-authority-data": ca_data}}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": user}}],
        "current-context": name,
        "preferences": {},
        "users": [
            {
                "name": user,
                "user": {
                    "exec": {
                        "apiVersion": "client.authentication.k8s.io/v1beta1",
                        "command": "kubelogin",
                        "args": [
                            "get-token",
                            "--environment",
                            "AzurePublicCloud",
                            "--server-id",
                            AKS_AAD_SERVER_APP,
                            "--client-id",
                            AKS_AAD_CLIENT_APP,
                            "--tenant-id",
                            tenant_id,
                            "--login",
                            "devicecode",
                        ],
                        "env": None,
                        "installHint": "\nkubelogin is not installed which is required to connect to AAD enabled "
                        "cluster.\n\nTo learn more, please go to https://aka.ms/aks/kubelogin\n",
                        "provideClusterInfo": False,
                    }
                },
            }
        ],
    }


class ArmStandin(ThreadedStandin):
    """Serves POST …/managedClusters/{name}/listClusterUserCredential?api-version=2026-08-01 over HTTPS.

    Like ARM it answers 401 (InvalidAuthenticationToken / AuthenticationFailed) unless the bearer token
    is one of `accepted_tokens`, 400 for another api-version, 404 ResourceGroupNotFound or
    ResourceNotFound for unknown names, and 404 InvalidResourceType for any other path. Clients trust
    `ca_cert` (e.g. azure-core's `connection_verify`); `requests` records every call,
    `tls_failures` every handshake a client broke off.
    """

    def __init__(self, *, accepted_tokens: Iterable[str], work_dir: Path | None = None) -> None:
        self.accepted_tokens = set(accepted_tokens)
        self.requests: list[ArmRequest] = []
        self.tls_failures: list[str] = []  # handshakes a client broke off (e.g. it did not trust ca_cert)
        self._clusters: dict[tuple[str, str, str], str] = {}  # lower-cased (sub, rg, name) -> kubeconfig YAML
        self._own_dir = work_dir is None
        self.work_dir = Path(tempfile.mkdtemp(prefix="arm-standin-")) if work_dir is None else work_dir
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.ca_cert, self._cert, self._key = _throwaway_tls(self.work_dir)
        self._lock = threading.Lock()

    def add_cluster(self, subscription_id: str, resource_group: str, name: str, kubeconfig: dict[str, Any]) -> None:
        """Make listClusterUserCredential of this cluster return `kubeconfig`."""
        key = (subscription_id.lower(), resource_group.lower(), name.lower())
        self._clusters[key] = yaml.safe_dump(kubeconfig, sort_keys=False)

    @property
    def url(self) -> str:
        assert self._server is not None, "start() the stand-in first"
        return f"https://127.0.0.1:{self._server.port}"

    def _listen(self) -> LocalServer:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self._cert, self._key)
        return LocalServer(self._handler(), name="arm-standin", tls=context, tls_failures=self.tls_failures)

    def stop(self) -> None:
        super().stop()
        if self._own_dir:
            shutil.rmtree(self.work_dir, ignore_errors=True)

    # --- the ARM behaviour ------------------------------------------------------------------------------
    def answer(self, method: str, target: str, headers: dict[str, str]) -> tuple[int, dict[str, Any], dict[str, str]]:
        """(status, JSON body, extra headers) for one request; also records it."""
        parts = urlsplit(target)
        query = parse_qs(parts.query)
        authorization = headers.get("authorization", "")
        status, body, extra = self._decide(method, parts.path, query, authorization)
        with self._lock:
            self.requests.append(
                ArmRequest(method, parts.path, query, authorization, headers.get("user-agent", ""), status)
            )
        return status, body, extra

    def _decide(
        self, method: str, path: str, query: dict[str, list[str]], authorization: str
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        # ARM authenticates before it looks at the path, so a bad token never reveals what exists.
        scheme, _, token = authorization.partition(" ")
        if not authorization:
            return _error(401, "AuthenticationFailed", "Authentication failed. The 'Authorization' header is missing.")
        if scheme.lower() != "bearer" or token not in self.accepted_tokens:
            challenge = (
                'Bearer authorization_uri="https://login.microsoftonline.com/common", error="invalid_token", '
                'error_description="The access token is invalid."'
            )
            status, body, _ = _error(401, "InvalidAuthenticationToken", "The access token is invalid.")
            return status, body, {"WWW-Authenticate": challenge}
        versions = query.get("api-version", [])
        if not versions:
            message = "The api-version query parameter (?api-version=) is required for all requests."
            return _error(400, "MissingApiVersionParameter", message)
        match = _CREDENTIALS_PATH.match(path)
        if match is None or method != "POST":
            return _error(404, "InvalidResourceType", f"The resource type could not be found for {method} {path}.")
        if versions != [API_VERSION]:
            return _error(
                400,
                "NoRegisteredProviderFound",
                f"No registered resource provider found for location and API version '{versions[0]}'. "
                f"The supported api-versions are '{API_VERSION}'.",
            )
        sub, rg, name = (match[g] for g in ("sub", "rg", "name"))
        if not any(s == sub.lower() and r == rg.lower() for s, r, _ in self._clusters):
            return _error(404, "ResourceGroupNotFound", f"Resource group '{rg}' could not be found.")
        kubeconfig = self._clusters.get((sub.lower(), rg.lower(), name.lower()))
        if kubeconfig is None:
            return _error(
                404,
                "ResourceNotFound",
                f"The Resource 'Microsoft.ContainerService/managedClusters/{name}' under resource group '{rg}' "
                "was not found. For more details please go to https://aka.ms/ARMResourceNotFoundFix",
            )
        value = base64.b64encode(kubeconfig.encode()).decode()
        return 200, {"kubeconfigs": [{"name": "clusterUser", "value": value}]}, {}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        standin = self

        class Handler(QuietHandler):  # tests read `requests`, not stderr
            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)  # the call has no body; read any so the connection stays sane
                received = {k.lower(): v for k, v in self.headers.items()}
                status, body, extra = standin.answer(self.command, self.path, received)
                sent = {"Content-Type": "application/json; charset=utf-8", "x-ms-request-id": str(uuid.uuid4())}
                respond(self, status, json.dumps(body).encode(), {**sent, **extra})

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

        return Handler


def _error(status: int, code: str, message: str) -> tuple[int, dict[str, Any], dict[str, str]]:
    """ARM's error envelope."""
    return status, {"error": {"code": code, "message": message}}, {}
