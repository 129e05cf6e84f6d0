"""The local sandbox behind `make run`: the control plane, KAITO and model stand-ins, demo team and users."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model

from workspaces.models import Membership, Team

SANDBOX_NAMESPACE = "sandbox"
RUN_DIR = Path(settings.BASE_DIR) / ".run"


@dataclass
class Sandbox:
    kubeconfig: str
    server: str
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()


def start_sandbox() -> Sandbox:
    """Start (or reuse) the detached local control plane and return where it is."""
    from devcluster import sandbox  # development only: the control plane is built from Go modules

    state = sandbox.up()
    return Sandbox(kubeconfig=state["kubeconfig"], server=state.get("server", ""))


def start_process(sandbox: Sandbox, name: str, args: list[str]) -> subprocess.Popen[bytes]:
    """A stand-in process, its output in .run/<name>.log, stopped with the portal."""
    RUN_DIR.mkdir(exist_ok=True)
    log = open(RUN_DIR / f"{name}.log", "ab")  # noqa: SIM115 - closed with the process
    process = subprocess.Popen([sys.executable, "-m", *args], stdout=log, stderr=subprocess.STDOUT, env=os.environ)
    sandbox.processes.append(process)
    return process


def seed_sandbox(*, admin_username: str = "admin") -> tuple[Team, str, str]:
    """A demo team in namespace `sandbox`: the admin requests, a second user approves (nobody approves their own)."""
    users = get_user_model().objects
    team, _ = Team.objects.get_or_create(
        slug="sandbox", defaults={"name": "Sandbox", "namespace": SANDBOX_NAMESPACE, "monthly_budget_usd": 1000}
    )
    admin = users.filter(username=admin_username).first()
    if admin is not None:
        Membership.objects.get_or_create(team=team, user=admin, defaults={"role": Membership.Role.REQUESTER})
    credentials = RUN_DIR / "approver-credentials"
    password = credentials.read_text().strip() if credentials.exists() else ""
    approver = users.filter(username="approver").first()
    if approver is None or not password:
        password = secrets.token_urlsafe(12)
        RUN_DIR.mkdir(exist_ok=True)
        credentials.write_text(password + "\n")
        credentials.chmod(0o600)
        if approver is None:
            approver = users.create_user(username="approver", email="approver@localhost", password=password)
        else:
            approver.set_password(password)
            approver.save(update_fields=["password"])
    Membership.objects.update_or_create(team=team, user=approver, defaults={"role": Membership.Role.APPROVER})
    return team, "approver", password


def start_standins(sandbox: Sandbox, *, timeout: float = 20.0) -> str:
    """KAITO's controller, the kubelet's log endpoint and the model servers, played by devcluster's stand-ins.

    Returns the KAITO_INFERENCE_URL the portal must use, or "" when the API server's service proxy reaches
    the model (the stand-in can add its local address only as root).
    """
    log = RUN_DIR / "standins.log"
    start = log.stat().st_size if log.exists() else 0
    args = [
        "devcluster.standin",
        "--kubeconfig",
        sandbox.kubeconfig,
        "--selector",
        "app.kubernetes.io/managed-by=kaito-portal",
    ]
    process = start_process(sandbox, "standins", args)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        for line in log.read_text(errors="replace")[start:].splitlines():
            if line.startswith("portal: KAITO_INFERENCE_URL="):
                return line.split("=", 1)[1].strip()
            if line.startswith("portal: leave KAITO_INFERENCE_URL empty"):
                return ""
        time.sleep(0.2)
    raise RuntimeError(f"the sandbox stand-ins did not start; see {log}")
