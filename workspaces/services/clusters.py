"""The process-wide cluster connection, built once from settings (tests can replace it)."""

from __future__ import annotations

import threading

from django.conf import settings

from workspaces.aks import AksCluster
from workspaces.cluster import Cluster, ConnectionSettings, connect

_lock = threading.Lock()
_cluster: Cluster | None = None


def connection_settings() -> ConnectionSettings:
    aks = None
    if settings.AKS_SUBSCRIPTION_ID and settings.AKS_RESOURCE_GROUP and settings.AKS_CLUSTER_NAME:
        aks = AksCluster(
            subscription_id=settings.AKS_SUBSCRIPTION_ID,
            resource_group=settings.AKS_RESOURCE_GROUP,
            name=settings.AKS_CLUSTER_NAME,
            arm_endpoint=settings.AZURE_ARM_ENDPOINT,
        )
    return ConnectionSettings(
        kubeconfig=settings.KUBECONFIG,
        context=settings.KUBE_CONTEXT,
        aks=aks,
        inference_url=settings.KAITO_INFERENCE_URL,
        sandbox=settings.SANDBOX,
    )


def get_cluster() -> Cluster:
    """The shared connection; connecting again after a failure is cheap, so errors are not cached."""
    global _cluster
    with _lock:
        if _cluster is None:
            _cluster = connect(connection_settings())
        return _cluster


def set_cluster(cluster: Cluster | None) -> None:
    """Use this connection from now on (tests, or after settings changed); None reconnects lazily."""
    global _cluster
    with _lock:
        if _cluster is not None and _cluster is not cluster:
            _cluster.close()
        _cluster = cluster
