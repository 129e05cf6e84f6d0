"""The control plane leaves no process and no folder behind: stop(), Ctrl-C, SIGTERM, SIGKILL, failed starts."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from devcluster import procs
from devcluster.cleanup import remove_stale_tempdirs
from devcluster.controlplane import ControlPlane, ControlPlaneError
from devcluster.crds import CRD_DIR

pytestmark = pytest.mark.cluster
REPO = Path(__file__).resolve().parents[2]
ONE_CRD = [CRD_DIR / "kaito.sh_workspaces.yaml"]  # enough to prove CRDs work, and quicker


def _processes_using(path):
    """Pids whose command line mentions path (etcd/apiserver flags name their work dir)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and any(str(path) in arg for arg in procs.pid_cmdline(int(entry.name))):
            found.append(int(entry.name))
    return found


def _wait_until(predicate, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return predicate()


def test_stop_leaves_no_process_and_no_folder():
    plane = ControlPlane(crd_files=ONE_CRD).start()
    pids = [plane.etcd_proc.pid, plane.apiserver_proc.pid]
    work_dir = plane.work_dir
    assert all(procs.pid_alive(p) for p in pids)
    assert work_dir.name.startswith(f"kaito-devcluster-{os.getpid()}-")
    assert (work_dir / "etcd-data").is_dir() and plane.kubeconfig_path.is_file()
    plane.stop()
    assert not any(procs.pid_alive(p) for p in pids)
    assert not work_dir.exists()
    assert _processes_using(work_dir) == []
    plane.stop()  # idempotent


def test_failed_start_reports_the_log_and_cleans_up():
    plane = ControlPlane(crd_files=ONE_CRD, extra_apiserver_args=["--no-such-flag=1"])
    with pytest.raises(ControlPlaneError) as err:
        plane.start()
    message = str(err.value)
    assert message.startswith("kube-apiserver exited with code 1; last lines of")
    assert "unknown flag: --no-such-flag" in message
    assert not plane.work_dir.exists()
    assert _processes_using(plane.work_dir) == []


HANGING_TEST = textwrap.dedent(
    """
    import json, os, time

    def test_hang(control_plane):
        with open(os.environ["DESCRIBE_TO"] + ".tmp", "w") as f:
            json.dump(control_plane.describe(), f)
        os.rename(os.environ["DESCRIBE_TO"] + ".tmp", os.environ["DESCRIBE_TO"])
        time.sleep(600)
    """
)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL], ids=["ctrl-c", "sigterm", "sigkill"])
def test_interrupted_pytest_run_leaves_nothing_behind(tmp_path, sig):
    (tmp_path / "test_hang.py").write_text(HANGING_TEST)
    describe_to = tmp_path / "describe.json"
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "-p",
        "devcluster.pytest_plugin",
        "-p",
        "no:django",
        "-p",
        "no:cacheprovider",
        "-c",
        os.devnull,
        "--rootdir",
        str(tmp_path),
        str(tmp_path / "test_hang.py"),
        "-q",
    ]
    env = {**os.environ, "DESCRIBE_TO": str(describe_to), "PYTHONPATH": str(REPO)}
    run = subprocess.Popen(cmd, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        assert _wait_until(describe_to.exists, 90), run.stdout.read().decode() if run.poll() is not None else ""
        state = json.loads(describe_to.read_text())
        pids = list(state["pids"].values())
        work_dir = Path(state["work_dir"])
        assert all(procs.pid_alive(p) for p in pids)
        run.send_signal(sig)
        output = run.communicate(timeout=60)[0].decode()
    finally:
        if run.poll() is None:
            run.kill()
    assert _wait_until(lambda: not any(procs.pid_alive(p) for p in pids), 10), "etcd/apiserver outlived pytest"
    if sig == signal.SIGKILL:
        # Nothing in the killed process could clean up; PDEATHSIG killed the children, and the next
        # control plane removes the orphaned folder.
        assert run.returncode == -signal.SIGKILL
        assert work_dir.exists()
        remove_stale_tempdirs()
    else:
        assert "KeyboardInterrupt" in output
        assert run.returncode == 2  # pytest's "interrupted"
    assert not work_dir.exists()
    assert _processes_using(work_dir) == []


def test_plugin_fails_the_test_when_the_control_plane_cannot_start(tmp_path):
    (tmp_path / "test_needs_cluster.py").write_text("def test_it(control_plane):\n    pass\n")
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "-p",
        "devcluster.pytest_plugin",
        "-p",
        "no:django",
        "-p",
        "no:cacheprovider",
        "-c",
        os.devnull,
        "--rootdir",
        str(tmp_path),
        "-q",
        "-rA",
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO), "KAITO_PORTAL_CACHE": str(tmp_path / "empty-cache")}
    run = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert run.returncode == 1, run.stdout
    assert "1 error" in run.stdout and "skipped" not in run.stdout
    assert "the local control plane did not start: missing etcd, kube-apiserver in" in run.stdout
    assert "run `python -m devcluster build`" in run.stdout
