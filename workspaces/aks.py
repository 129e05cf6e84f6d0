"""Azure side of connecting to AKS: the cluster's user kubeconfig and, for Entra ID clusters, a token."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

import yaml
from azure.core.credentials import TokenCredential
from azure.identity import DefaultAzureCredential
from azure.mgmt.containerservice import ContainerServiceClient

# The fixed application id of "Azure Kubernetes Service AAD Server" (the audience kubelogin asks for).
AKS_AAD_SERVER_APP = "6dae42f8-4368-4678-94ff-3960e28e3630"
TOKEN_SCOPE = f"{AKS_AAD_SERVER_APP}/.default"


@dataclass(frozen=True)
class AksCluster:
    subscription_id: str
    resource_group: str
    name: str
    arm_endpoint: str = "https://management.azure.com"


class AksTokenSource:
    """Entra ID bearer tokens for the API server, refreshed five minutes before they expire."""

    def __init__(self, credential: TokenCredential) -> None:
        self._credential = credential
        self._lock = threading.Lock()
        self._token = ""
        self._expires_on = 0

    def token(self) -> str:
        with self._lock:
            if time.time() > self._expires_on - 300:
                access = self._credential.get_token(TOKEN_SCOPE)
                self._token, self._expires_on = access.token, access.expires_on
            return self._token


def _uses_entra_id(kubeconfig: dict[str, Any]) -> bool:
    for user in kubeconfig.get("users", []):
        spec = user.get("user") or {}
        command = (spec.get("exec") or {}).get("command", "")
        if "kubelogin" in command or (spec.get("auth-provider") or {}).get("name") == "azure":
            return True
    return False


def aks_kubeconfig(
    cluster: AksCluster, *, credential: TokenCredential | None = None, **client_options: Any
) -> tuple[dict[str, Any], AksTokenSource | None]:
    """The cluster's user kubeconfig from Azure Resource Manager, and a token source if it needs Entra ID.

    For Entra ID clusters the kubeconfig's user execs kubelogin, which the portal does not ship; the
    caller replaces that user with bearer tokens from the same credential.
    """
    credential = credential or DefaultAzureCredential()
    arm = ContainerServiceClient(credential, cluster.subscription_id, base_url=cluster.arm_endpoint, **client_options)
    try:
        result = arm.managed_clusters.list_cluster_user_credentials(cluster.resource_group, cluster.name)
    finally:
        arm.close()
    if not result.kubeconfigs:
        raise RuntimeError(f"Azure returned no kubeconfig for AKS cluster {cluster.name}.")
    kubeconfig = yaml.safe_load(result.kubeconfigs[0].value)
    return kubeconfig, (AksTokenSource(credential) if _uses_entra_id(kubeconfig) else None)
