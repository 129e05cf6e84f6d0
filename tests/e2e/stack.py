"""The whole portal as real processes for browser journeys: web, reconciler and the KAITO/kubelet/model stand-ins."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from devcluster.procs import free_port, stop_child
from devcluster.standin import localaddr

ROOT = Path(__file__).resolve().parents[2]
SELECTOR = "app.kubernetes.io/managed-by=kaito-portal"
# Fast enough for a journey, slow enough to watch: each KAITO step takes STEP_SECONDS (tuning runs 4 of them), and
# the model writes one token every TOKEN_DELAY seconds, so a 40-word answer streams for about 3 s.
STEP_SECONDS = 0.6
TOKEN_DELAY = 0.07
RESYNC_SECONDS = 5


@dataclass
class Process:
    name: str
    popen: subprocess.Popen
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, timeout: float = 20) -> None:
        """SIGTERM (every process here cleans up on it: the stand-ins remove their extra address), then SIGKILL."""
        stop_child(self.popen, timeout)


@dataclass
class Stack:
    url: str
    mode: str  # "embedded" (one process, in-memory channel layer) or "redis" (web and reconciler apart)
    kubeconfig: str
    inference_url: str
    processes: list[Process] = field(default_factory=list)

    @property
    def ws_url(self) -> str:
        return self.url.replace("http://", "ws://", 1)

    def log(self, lines: int = 60) -> str:
        """The last lines of every process's output, to attach to a failing assertion."""
        parts = []
        for proc in self.processes:
            tail = "\n".join(proc.log().splitlines()[-lines:])
            parts.append(f"--- {proc.name} ({proc.log_path}) ---\n{tail}")
        return "\n".join(parts)


def start(name: str, args: list[str], env: dict[str, str], log_dir: Path) -> Process:
    log_path = log_dir / f"{name}.log"
    with log_path.open("w") as out:
        popen = subprocess.Popen(args, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    return Process(name, popen, log_path)


def wait_for(proc: Process, ready: Callable[[], str | None], timeout: float, what: str) -> str:
    """Poll `ready` until it returns a value; fail with the process's output if it exits or takes too long."""
    deadline = time.monotonic() + timeout
    while True:
        found = ready()
        if found is not None:
            return found
        if proc.popen.poll() is not None:
            raise RuntimeError(f"{proc.name} exited with {proc.popen.returncode} before {what}:\n{proc.log()[-4000:]}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{proc.name}: no {what} within {timeout}s:\n{proc.log()[-4000:]}")
        time.sleep(0.1)


def line_starting(proc: Process, prefix: str) -> Callable[[], str | None]:
    return lambda: next((line for line in proc.log().splitlines() if line.startswith(prefix)), None)


def healthy(url: str) -> Callable[[], str | None]:
    def check() -> str | None:
        with (
            contextlib.suppress(OSError, urllib.error.URLError),
            urllib.request.urlopen(url + "/healthz", timeout=2) as response,
        ):
            return "ok" if response.status == 200 else None
        return None

    return check


def child_env(**extra: str) -> dict[str, str]:
    # The server must fail loudly on ORM calls from async code, as in production (the test process allows them).
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_ALLOW_ASYNC_UNSAFE"}
    env.update({"DJANGO_SETTINGS_MODULE": "portal.settings", "PYTHONUNBUFFERED": "1", **extra})
    return env


def start_standins(kubeconfig: str, log_dir: Path) -> tuple[Process, str]:
    """KAITO's controller, the kubelet's log endpoint and one model per Ready Workspace; returns KAITO_INFERENCE_URL.

    A per-process extra address, free model and kubelet ports: a sandbox (`make run`) or another test session on
    this machine keeps its own.
    """
    args = [
        sys.executable, "-m", "devcluster.standin", "--kubeconfig", kubeconfig, "--selector", SELECTOR,
        "--address", localaddr.session_address(os.getpid()), "--model-port", "0", "--kubelet-port", "0",
        "--step-seconds", str(STEP_SECONDS), "--line-seconds", "0.3", "--token-delay", str(TOKEN_DELAY),
    ]  # fmt: skip
    proc = start("standins", args, child_env(), log_dir)
    line = wait_for(proc, line_starting(proc, "portal: "), 30, "announcement of the model address")
    # "portal: KAITO_INFERENCE_URL=<template>" without root; with root the API server's service proxy reaches them.
    prefix = "portal: KAITO_INFERENCE_URL="
    inference_url = line.removeprefix(prefix).strip() if line.startswith(prefix) else ""
    return proc, inference_url


@contextlib.contextmanager
def run_stack(
    *, kubeconfig: str, database_url: str, lease_namespace: str, log_dir: Path, redis_url: str = ""
) -> Iterator[Stack]:
    """Everything a user's journey touches, on the given database; the reconciler's own process when Redis is set.

    Embedded defaults (no REDIS_URL): `manage.py serve` runs the web server and the reconciler in one process,
    because the in-memory channel layer cannot carry the reconciler's updates to another process (`make run`).
    With REDIS_URL: Daphne and `manage.py reconcile` are separate processes talking through Redis, as deployed.
    """
    log_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    processes: list[Process] = []
    try:
        standins, inference_url = start_standins(kubeconfig, log_dir)
        processes.append(standins)
        env = child_env(
            DATABASE_URL=database_url, KUBECONFIG=kubeconfig, KAITO_INFERENCE_URL=inference_url,
            PORTAL_LEASE_NAMESPACE=lease_namespace, RECONCILE_RESYNC_SECONDS=str(RESYNC_SECONDS),
            PORTAL_CHAT_RATE_PER_MINUTE="0", PORTAL_BASE_URL=url,
            # What a deployment does after an approval and after a tuning request: apply and check at once.
            PORTAL_APPLY_AFTER_APPROVAL="background", PORTAL_PREFLIGHT_AFTER_CREATE="background",
        )  # fmt: skip
        if redis_url:
            env["REDIS_URL"] = redis_url
            reconciler = start("reconciler", [sys.executable, "manage.py", "reconcile"], env, log_dir)
            processes.append(reconciler)
            wait_for(reconciler, line_starting(reconciler, "reconciling against"), 60, "reconciler start")
            # Production runs Daphne on portal.asgi (static files from collectstatic); the test app adds the
            # finders' static files instead, so that no collectstatic is needed.
            cmd = [sys.executable, "-m", "daphne", "--bind", "127.0.0.1", "--port", str(port)]
            web = start("web", [*cmd, "tests.browser.asgi:application"], env, log_dir)
            processes.append(web)
            mode = "redis"
        else:
            env.pop("REDIS_URL", None)
            # DJANGO_DEBUG=1 as `make run` sets it: runserver then serves the static files.
            env["DJANGO_DEBUG"] = "1"
            web = start("web", [sys.executable, "manage.py", "serve", f"127.0.0.1:{port}"], env, log_dir)
            processes.append(web)
            wait_for(web, line_starting(web, "Reconciler running against"), 60, "in-process reconciler start")
            mode = "embedded"
        wait_for(web, healthy(url), 60, "answer on /healthz")
        yield Stack(url=url, mode=mode, kubeconfig=kubeconfig, inference_url=inference_url, processes=processes)
    finally:
        # Web first (no new work), then the reconciler, then the stand-ins (they remove their address and models).
        for proc in reversed(processes):
            proc.stop()
