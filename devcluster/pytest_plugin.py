"""pytest plugin: one real control plane per test session, a fresh namespace and API client per test."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator

import pytest
from kubernetes import client

from devcluster.controlplane import ControlPlane

_STARTUP: list[float] = []


@pytest.fixture(scope="session")
def control_plane() -> Iterator[ControlPlane]:
    """Start etcd + kube-apiserver with KAITO's CRDs for the session; fail (never skip) if impossible."""
    plane = ControlPlane()
    try:
        plane.start()
    except Exception as err:  # BuildError (binaries missing) and ControlPlaneError carry the reason
        pytest.fail(f"the local control plane did not start: {err}", pytrace=False)
    _STARTUP.append(plane.startup_seconds)
    try:
        yield plane
    finally:
        plane.stop()


@pytest.fixture
def k8s_api_client(control_plane: ControlPlane) -> Iterator[client.ApiClient]:
    """An admin (system:masters) ApiClient, closed after the test."""
    with control_plane.api_client() as api:
        yield api


@pytest.fixture
def k8s_namespace(request: pytest.FixtureRequest, k8s_api_client: client.ApiClient) -> str:
    """Create a uniquely named namespace for this test and return its name.

    It is never deleted: without kube-controller-manager a deleted namespace stays Terminating forever,
    so unique names are the isolation; the whole etcd goes away with the session.
    """
    stem = re.sub(r"[^a-z0-9-]+", "-", request.node.name.lower()).strip("-")[:40].strip("-") or "test"
    name = f"t-{stem}-{uuid.uuid4().hex[:8]}"
    client.CoreV1Api(k8s_api_client).create_namespace(
        {"metadata": {"name": name, "labels": {"kaito-portal.dev/test-namespace": "true"}}}
    )
    return name


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that uses the control plane as `cluster`, so `-m "not cluster"` skips them all."""
    for item in items:
        if "control_plane" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.cluster)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Report how long the control plane took to start (the warm start-up time)."""
    if _STARTUP:
        terminalreporter.write_line(f"devcluster: control plane started in {_STARTUP[0]:.1f}s")
