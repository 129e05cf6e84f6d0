"""`make run`'s server: without KUBECONFIG it starts the sandbox and says so; with one, it uses that cluster."""

import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from devcluster.procs import free_port

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.cluster


def run(tmp_path, env_extra, *args):
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'portal.sqlite3'}",
        "DJANGO_DEBUG": "1",
        "PORTAL_LOG_LEVEL": "WARNING",
        **env_extra,
    }
    env.pop("KUBECONFIG", None) if "KUBECONFIG" not in env_extra else None
    for command in (["migrate", "-v0"], ["sync_catalog"], ["ensure_admin", "--credentials-file", str(tmp_path / "c")]):
        subprocess.run([sys.executable, "manage.py", *command], cwd=ROOT, env=env, check=True, capture_output=True)
    port = free_port()
    log = open(tmp_path / "serve.log", "w+")  # noqa: SIM115 - read by the test, closed at the end
    process = subprocess.Popen(
        [sys.executable, "manage.py", "serve", f"127.0.0.1:{port}", *args],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    return process, port, log


def wait_for_http(port, log, timeout=90):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/accounts/login/", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    log.seek(0)
    raise AssertionError(f"the portal did not answer; its output:\n{log.read()[-3000:]}")


def stop(process):
    os.killpg(process.pid, signal.SIGINT)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        raise


def test_without_kubeconfig_the_sandbox_is_started_and_announced(tmp_path):
    sandbox_dir = tmp_path / "sandbox"
    process, port, log = run(tmp_path, {"KAITO_PORTAL_SANDBOX_DIR": str(sandbox_dir)})
    try:
        wait_for_http(port, log)
        log.seek(0)
        output = log.read()
        assert "No KUBECONFIG set: using the local SANDBOX cluster" in output
        assert re.search(r"Sandbox cluster at https://127\.0\.0\.1:\d+", output)
        assert "sign in as 'approver'" in output
        assert "Reconciler running against https://127.0.0.1" in output
        page = urllib.request.urlopen(f"http://127.0.0.1:{port}/accounts/login/").read().decode()
        assert 'id="sandbox-banner"' in page
    finally:
        stop(process)
        subprocess.run(
            [sys.executable, "-m", "devcluster", "down"],
            cwd=ROOT,
            env={**os.environ, "KAITO_PORTAL_SANDBOX_DIR": str(sandbox_dir)},
            capture_output=True,
        )
        log.close()


def test_with_kubeconfig_that_cluster_is_used(tmp_path, control_plane):
    process, port, log = run(tmp_path, {"KUBECONFIG": str(control_plane.kubeconfig_path)})
    try:
        wait_for_http(port, log)
        log.seek(0)
        output = log.read()
        assert f"Using the cluster from KUBECONFIG={control_plane.kubeconfig_path}" in output
        assert "SANDBOX" not in output
        assert f"Reconciler running against {control_plane.server}" in output
    finally:
        stop(process)
        log.close()
