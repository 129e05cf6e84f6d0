"""Fixtures for the devcluster tests: the plugin, Workspace helpers."""

from __future__ import annotations

import pytest
from kubernetes import client

GROUP, VERSION, PLURAL = "kaito.sh", "v1beta1", "workspaces"


def pytest_configure(config):
    # Until tests/conftest.py lists it in pytest_plugins (only the top-level conftest may), register the
    # plugin here; import_plugin is a no-op when it is already registered.
    config.pluginmanager.import_plugin("devcluster.pytest_plugin")


def workspace(name, labels=None, **fields):
    """A valid v1beta1 Workspace: spec fields are top level (no `spec:` key)."""
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Workspace",
        "metadata": {"name": name, "labels": labels or {}},
        "resource": {"instanceType": "Standard_NC24ads_A100_v4", "labelSelector": {"matchLabels": {"apps": name}}},
        "inference": {"preset": {"name": "phi-4-mini-instruct"}},
    }
    body.update(fields)
    return body


@pytest.fixture
def custom(k8s_api_client):
    return client.CustomObjectsApi(k8s_api_client)
