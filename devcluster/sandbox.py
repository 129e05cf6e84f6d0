"""The detached control plane for the local sandbox (`python -m devcluster up|down|status`)."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from devcluster import clients, procs
from devcluster.build import cache_root, ensure_binaries
from devcluster.controlplane import ControlPlane, Ports
from devcluster.pki import load_pki


def state_dir() -> Path:
    """Folder of the sandbox: KAITO_PORTAL_SANDBOX_DIR, else <cache>/sandbox."""
    override = os.environ.get("KAITO_PORTAL_SANDBOX_DIR")
    return Path(override).expanduser().resolve() if override else cache_root() / "sandbox"


def _state_file() -> Path:
    return state_dir() / "state.json"


def _cluster_dir() -> Path:
    return state_dir() / "cluster"


@contextmanager
def _locked() -> Iterator[None]:
    """Serialise up/down so two `make run` never start two sandboxes."""
    state_dir().mkdir(parents=True, exist_ok=True)
    with open(state_dir() / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def load_state() -> dict[str, Any] | None:
    """Return the recorded sandbox state, or None."""
    try:
        state: dict[str, Any] = json.loads(_state_file().read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return state


def _own_pid(state: dict[str, Any], name: str) -> int | None:
    """The recorded pid of name if it is alive and still runs our binary (pids get reused)."""
    pid = state.get("pids", {}).get(name)
    if not pid or not procs.pid_alive(pid):
        return None
    argv = procs.pid_cmdline(pid)
    return pid if argv and argv[0] == state["binaries"][name] else None


def healthy(state: dict[str, Any]) -> bool:
    """True if both processes run and the apiserver answers /readyz."""
    if not (_own_pid(state, "etcd") and _own_pid(state, "kube-apiserver")):
        return False
    ctx = clients.admin_ssl_context(load_pki(Path(state["work_dir"]) / "pki"))
    return clients.https_get(f"{state['server']}/readyz", ctx) == (200, "ok")


def _stop_processes(state: dict[str, Any]) -> None:
    for name in ("kube-apiserver", "etcd"):  # apiserver first: it must not see etcd vanish under it
        pid = _own_pid(state, name)
        if pid:
            procs.stop_pid(pid, timeout=20)


def up() -> dict[str, Any]:
    """Start the sandbox control plane, or reuse a healthy one; return its state."""
    with _locked():
        state = load_state()
        if state and healthy(state):
            _log(f"already running at {state['server']} (etcd data in {state['work_dir']}/etcd-data)")
            return state
        if state:
            _log("recorded sandbox is not healthy; restarting it on its kept data")
            _stop_processes(state)
        bins = ensure_binaries(log=_log)
        ports = Ports(**state["ports"]) if state else None  # same ports keep copied kubeconfigs valid
        plane = ControlPlane(bin_dir=bins, work_dir=_cluster_dir(), detached=True, ports=ports)
        plane.start()
        new_state = {**plane.describe(), "started_at": time.time(), "startup_seconds": plane.startup_seconds}
        _state_file().write_text(json.dumps(new_state, indent=2))
        _log(f"started in {plane.startup_seconds:.1f}s at {plane.server}; logs in {plane.work_dir / 'logs'}")
        return new_state


def down(keep_data: bool = False) -> bool:
    """Stop the sandbox and remove its folder (keep_data keeps PKI and etcd data for the next `up`)."""
    with _locked():
        state = load_state()
        if state:
            _stop_processes(state)
        if keep_data and state:  # keep ports too: etcd's member record holds its peer URL
            _state_file().write_text(json.dumps({**state, "pids": {}}, indent=2))
        else:
            _state_file().unlink(missing_ok=True)
            shutil.rmtree(_cluster_dir(), ignore_errors=True)
    if not keep_data:
        shutil.rmtree(state_dir(), ignore_errors=True)
    return state is not None


def status() -> tuple[bool, dict[str, Any] | None]:
    """Return (running and healthy, recorded state)."""
    state = load_state()
    return (bool(state) and healthy(state or {})), state


def _log(msg: str) -> None:
    print(f"[devcluster] {msg}", file=sys.stderr, flush=True)
