"""`python -m devcluster up|status|kubeconfig|down`: a detached sandbox that outlives the CLI."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from kubernetes import client, config

from devcluster import procs

pytestmark = pytest.mark.cluster
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def cli(tmp_path):
    env = {**os.environ, "KAITO_PORTAL_SANDBOX_DIR": str(tmp_path / "sandbox"), "PYTHONPATH": str(REPO)}

    def run(*args):
        return subprocess.run(
            [sys.executable, "-m", "devcluster", *args], env=env, cwd=REPO, capture_output=True, text=True, timeout=180
        )

    yield run
    run("down")  # never leave a sandbox behind, even when an assertion failed


def _state(cli):
    return json.loads(cli("status", "--json").stdout)


def test_up_is_detached_idempotent_and_down_removes_everything(cli, tmp_path):
    up = cli("up")
    assert up.returncode == 0, up.stderr
    kubeconfig = Path(up.stdout.strip())
    assert kubeconfig == tmp_path / "sandbox" / "cluster" / "kubeconfig"
    assert "started in" in up.stderr

    # The CLI process has exited; the control plane still serves the KAITO CRDs.
    api = config.new_client_from_config(config_file=str(kubeconfig))
    try:
        names = [c.metadata.name for c in client.ApiextensionsV1Api(api).list_custom_resource_definition().items]
        assert "workspaces.kaito.sh" in names
        client.CoreV1Api(api).create_namespace({"metadata": {"name": "kept"}})
    finally:
        api.close()

    first = _state(cli)
    assert first["running"] is True
    pids = first["state"]["pids"]
    assert all(procs.pid_alive(p) for p in pids.values())

    again = cli("up")
    assert again.returncode == 0 and again.stdout.strip() == str(kubeconfig)
    assert "already running" in again.stderr
    assert _state(cli)["state"]["pids"] == pids

    status = cli("status")
    assert status.returncode == 0 and f"kubeconfig: {kubeconfig}" in status.stdout
    assert cli("kubeconfig").stdout.strip() == str(kubeconfig)

    # down --keep-data, then up: same data, same port, new processes.
    assert cli("down", "--keep-data").returncode == 0
    assert not any(procs.pid_alive(p) for p in pids.values())
    assert cli("status").returncode == 3
    resumed = cli("up")
    assert resumed.returncode == 0, resumed.stderr
    state = _state(cli)["state"]
    assert state["server"] == first["state"]["server"] and state["pids"] != pids
    api = config.new_client_from_config(config_file=str(kubeconfig))
    try:
        assert client.CoreV1Api(api).read_namespace("kept").metadata.name == "kept"
    finally:
        api.close()

    down = cli("down")
    assert down.returncode == 0 and "sandbox stopped" in down.stderr
    assert not any(procs.pid_alive(p) for p in state["pids"].values())
    assert not (tmp_path / "sandbox").exists()
    assert cli("status").returncode == 3
    gone = cli("kubeconfig")
    assert gone.returncode == 1 and "does not run" in gone.stderr


def test_up_restarts_a_crashed_sandbox(cli):
    assert cli("up").returncode == 0
    before = _state(cli)["state"]
    procs.stop_pid(before["pids"]["kube-apiserver"], timeout=20)  # the apiserver died behind our back
    assert cli("status").returncode == 3
    again = cli("up")
    assert again.returncode == 0, again.stderr
    assert "not healthy" in again.stderr
    after = _state(cli)
    assert after["running"] is True and after["state"]["server"] == before["server"]
    assert not procs.pid_alive(before["pids"]["etcd"])  # the old etcd was stopped, not leaked
