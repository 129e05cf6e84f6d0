"""A real etcd + kube-apiserver on 127.0.0.1 with KAITO's CRDs applied, for tests and the sandbox."""

from __future__ import annotations

import hashlib
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from kubernetes import client

from devcluster import cleanup, clients, crds, procs
from devcluster.build import require_binaries
from devcluster.pki import Pki, create_pki, load_pki


class ControlPlaneError(RuntimeError):
    """The control plane failed; the message ends with the last lines of the relevant log."""


@dataclass
class Ports:
    """Loopback ports of one control plane."""

    etcd_client: int = 0
    etcd_peer: int = 0
    apiserver: int = 0


class ControlPlane:
    """etcd + kube-apiserver (RBAC, own CA, SA keys) with KAITO's CRDs; stop() leaves nothing behind.

    work_dir=None uses a fresh temp folder that stop() removes. A given work_dir is kept (the
    sandbox); its PKI and etcd data are reused. detached=True lets the processes outlive this Python
    process (no PDEATHSIG, no atexit stop).
    """

    def __init__(
        self,
        *,
        bin_dir: Path | None = None,
        work_dir: Path | None = None,
        detached: bool = False,
        crd_files: Sequence[Path] | None = None,
        watch_cache: bool = True,
        ports: Ports | None = None,
        start_timeout: float = 90.0,
        extra_apiserver_args: Sequence[str] = (),
    ) -> None:
        self.bin_dir = bin_dir
        self._own_work_dir = work_dir is None
        self.work_dir = work_dir.resolve() if work_dir else Path()
        self.detached = detached
        self.crd_files = list(crds.crd_files() if crd_files is None else crd_files)
        self.watch_cache = watch_cache
        self.ports = ports or Ports()
        self.start_timeout = start_timeout
        self.extra_apiserver_args = list(extra_apiserver_args)
        self.etcd_proc: subprocess.Popen[bytes] | None = None
        self.apiserver_proc: subprocess.Popen[bytes] | None = None
        self.pki: Pki | None = None
        self.startup_seconds = 0.0
        self._lock = threading.RLock()  # re-entrant: a SIGTERM handler may stop() mid-stop()

    # --- paths and addresses -------------------------------------------------------------------
    @property
    def etcd_data_dir(self) -> Path:
        return self.work_dir / "etcd-data"

    @property
    def etcd_log(self) -> Path:
        return self.work_dir / "logs" / "etcd.log"

    @property
    def apiserver_log(self) -> Path:
        return self.work_dir / "logs" / "kube-apiserver.log"

    @property
    def kubeconfig_path(self) -> Path:
        return self.work_dir / "kubeconfig"

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.ports.apiserver}"

    @property
    def etcd_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.etcd_client}"

    @property
    def _bins(self) -> Path:
        if self.bin_dir is None:
            raise ControlPlaneError("control plane not started")
        return self.bin_dir

    def _pki(self) -> Pki:
        if self.pki is None:
            raise ControlPlaneError("control plane not started")
        return self.pki

    # --- lifecycle --------------------------------------------------------------------------------
    def start(self) -> ControlPlane:
        """Start etcd and kube-apiserver, write the kubeconfig, apply and wait for the CRDs."""
        started = time.monotonic()
        self.bin_dir = self.bin_dir or require_binaries()
        if self._own_work_dir:
            cleanup.remove_stale_tempdirs()
            self.work_dir = cleanup.new_tempdir()
        self.work_dir.mkdir(parents=True, exist_ok=True)
        if not self.detached:
            cleanup.register(self)
        try:
            pki_dir = self.work_dir / "pki"
            self.pki = load_pki(pki_dir) if (pki_dir / "ca.crt").exists() else create_pki(pki_dir)
            self._start_etcd()
            self.start_apiserver()
            with self.api_client() as api:
                names = crds.apply_crds(api, crds.load_crds(self.crd_files))
                crds.wait_established(api, names, timeout=self.start_timeout)
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - started
        return self

    def stop(self) -> None:
        """Stop kube-apiserver then etcd (process groups), and remove the temp folder if it is ours."""
        with self._lock:
            self.stop_apiserver()
            if self.etcd_proc is not None:
                procs.stop_pid(self.etcd_proc.pid, timeout=10, proc=self.etcd_proc)
                self.etcd_proc = None
            if self._own_work_dir and self.work_dir != Path() and self.work_dir.exists():
                shutil.rmtree(self.work_dir, ignore_errors=True)
            cleanup.unregister(self)

    def __enter__(self) -> ControlPlane:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # --- etcd ---------------------------------------------------------------------------------------
    def _etcd_cmd(self) -> list[str]:
        peer = f"http://127.0.0.1:{self.ports.etcd_peer}"
        return [
            str(self._bins / "etcd"),
            "--name=devcluster",
            f"--data-dir={self.etcd_data_dir}",
            f"--listen-client-urls={self.etcd_url}",
            f"--advertise-client-urls={self.etcd_url}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=devcluster={peer}",
            "--unsafe-no-fsync",  # test data: durability is not worth the fsync latency
            "--log-level=warn",
        ]

    def _start_etcd(self) -> None:
        def pick() -> None:
            for field in ("etcd_client", "etcd_peer"):
                port = getattr(self.ports, field)
                if not port or not procs.port_free(port):
                    setattr(self.ports, field, procs.free_port())

        def ready() -> bool:
            try:
                return "header" in clients.http_post_json(f"{self.etcd_url}/v3/maintenance/status", {}, 1.0)
            except OSError:
                return False

        self.etcd_proc = self._launch("etcd", pick, self._etcd_cmd, self.etcd_log, ready, 30.0)

    def etcd_revision(self) -> int:
        """Return etcd's current revision (the newest resourceVersion of any object)."""
        header = clients.http_post_json(f"{self.etcd_url}/v3/maintenance/status", {})["header"]
        return int(header["revision"])

    def compact_etcd(self, revision: int | None = None) -> int:
        """Compact etcd's history up to revision (default: now) and return it.

        Older resourceVersions are then gone from etcd. The apiserver's watch cache still serves
        watches inside its own window; expire_watch_history() gives a reliable 410 Gone.
        """
        rev = revision or self.etcd_revision()
        try:
            clients.http_post_json(f"{self.etcd_url}/v3/kv/compaction", {"revision": rev, "physical": True})
        except OSError as err:
            body = getattr(err, "read", lambda: b"")().decode(errors="replace")
            if "compacted" not in body:  # compacting an already compacted revision is fine
                raise ControlPlaneError(f"etcd compaction at {rev} failed: {err} {body}") from err
        return rev

    def expire_watch_history(self) -> int:
        """Make every resourceVersion up to now answer 410 Gone to a watch; return the revision.

        Compacting etcd is not enough while the watch cache is on: the cache keeps serving a window of
        recent events (at least ~75 s). Restarting the apiserver starts a new cache whose window begins
        at its initial list, so older resourceVersions are "too old" (as after a real apiserver restart).
        """
        rev = self.compact_etcd()
        self.restart_apiserver()
        return rev

    # --- kube-apiserver -----------------------------------------------------------------------------
    def _apiserver_cmd(self) -> list[str]:
        pki = self._pki()
        port = self.ports.apiserver
        return [
            str(self._bins / "kube-apiserver"),
            f"--etcd-servers={self.etcd_url}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={port}",
            f"--cert-dir={pki.ca_cert.parent}",
            f"--tls-cert-file={pki.serving_cert}",
            f"--tls-private-key-file={pki.serving_key}",
            f"--client-ca-file={pki.ca_cert}",
            "--authorization-mode=RBAC",  # like a real cluster: a SA sees only what its Role grants
            f"--service-account-issuer=https://127.0.0.1:{port}/",
            f"--service-account-key-file={pki.sa_key}",
            f"--service-account-signing-key-file={pki.sa_key}",
            "--service-cluster-ip-range=10.0.0.0/24",
            "--allow-privileged=true",
            # No controller-manager creates default ServiceAccounts; envtest disables this plugin too.
            "--disable-admission-plugins=ServiceAccount",
            # No loopback endpoint for the `kubernetes` Service (it would only log errors).
            "--endpoint-reconciler-type=none",
            f"--watch-cache={'true' if self.watch_cache else 'false'}",
            "--profiling=false",
            # On SIGTERM, cut open watches 2 s after in-flight requests drained; the default waits up to
            # --request-timeout (60 s) for watch connections that never end by themselves.
            "--shutdown-send-retry-after=true",
            *self.extra_apiserver_args,
        ]

    def start_apiserver(self) -> None:
        """Start kube-apiserver (same port as before if still free) and wait for /readyz."""
        if self.apiserver_proc is not None:
            return
        pki = self._pki()
        ctx = clients.admin_ssl_context(pki)

        def pick() -> None:
            if not self.ports.apiserver or not procs.port_free(self.ports.apiserver):
                self.ports.apiserver = procs.free_port()

        def ready() -> bool:
            return clients.https_get(f"{self.server}/readyz", ctx) == (200, "ok")

        self.apiserver_proc = self._launch(
            "kube-apiserver", pick, self._apiserver_cmd, self.apiserver_log, ready, self.start_timeout
        )
        clients.write_admin_kubeconfig(self.kubeconfig_path, self.server, pki)

    def stop_apiserver(self, graceful: bool = True) -> None:
        """Stop kube-apiserver only; etcd and its data stay.

        graceful: SIGTERM, open watches end cleanly after ~2 s. Otherwise SIGKILL, like a crash:
        clients see their connections reset.
        """
        if self.apiserver_proc is not None:
            sig = signal.SIGTERM if graceful else signal.SIGKILL
            procs.stop_pid(self.apiserver_proc.pid, timeout=20, proc=self.apiserver_proc, sig=sig)
            self.apiserver_proc = None

    def restart_apiserver(self, graceful: bool = True) -> None:
        """Stop and start kube-apiserver on the same port; its watch cache starts empty again."""
        self.stop_apiserver(graceful=graceful)
        self.start_apiserver()

    # --- process launch -----------------------------------------------------------------------------
    def _launch(
        self,
        what: str,
        pick_ports: Callable[[], None],
        cmd: Callable[[], list[str]],
        log: Path,
        ready: Callable[[], bool],
        timeout: float,
    ) -> subprocess.Popen[bytes]:
        """Spawn, wait until ready; retry with new ports when a port was taken meanwhile."""
        for _attempt in range(3):
            pick_ports()
            log.parent.mkdir(parents=True, exist_ok=True)
            offset = log.stat().st_size if log.exists() else 0
            proc = procs.spawn(cmd(), log, detached=self.detached)
            deadline = time.monotonic() + timeout
            while proc.poll() is None and time.monotonic() < deadline:
                if ready():
                    return proc
                time.sleep(0.1)
            exited = proc.poll() is not None
            procs.stop_pid(proc.pid, timeout=5, proc=proc)
            new_output = log.read_bytes()[offset:].decode(errors="replace")
            if exited and "address already in use" in new_output:
                self.ports = Ports(**{**asdict(self.ports), **{f: 0 for f in self._port_fields(what)}})
                continue
            state = f"exited with code {proc.returncode}" if exited else f"not ready after {timeout:.0f}s"
            raise ControlPlaneError(f"{what} {state}; last lines of {log}:\n{procs.tail(log)}")
        raise ControlPlaneError(f"{what}: ports kept being taken; last lines of {log}:\n{procs.tail(log)}")

    @staticmethod
    def _port_fields(what: str) -> tuple[str, ...]:
        return ("etcd_client", "etcd_peer") if what == "etcd" else ("apiserver",)

    # --- clients ------------------------------------------------------------------------------------
    def api_client(self) -> client.ApiClient:
        """Return an ApiClient for the admin user (system:masters)."""
        return client.ApiClient(clients.admin_configuration(self.server, self._pki()))

    def service_account_token(
        self, namespace: str, name: str, expiration_seconds: int = 3600, create: bool = True
    ) -> str:
        """Create ServiceAccount namespace/name (unless create=False) and return a TokenRequest token."""
        with self.api_client() as api:
            return clients.request_sa_token(api, namespace, name, expiration_seconds, create)

    def kubeconfig_for_token(self, token: str, path: Path | None = None) -> Path:
        """Write a kubeconfig that authenticates with token; default path is inside work_dir."""
        target = path or self.work_dir / f"kubeconfig-token-{hashlib.sha256(token.encode()).hexdigest()[:12]}"
        return clients.write_token_kubeconfig(target, self.server, self._pki().ca_cert, token)

    def api_client_for_token(self, token: str) -> client.ApiClient:
        """Return an ApiClient that authenticates with a bearer token (e.g. a ServiceAccount's)."""
        return client.ApiClient(clients.token_configuration(self.server, self._pki().ca_cert, token))

    def describe(self) -> dict[str, Any]:
        """State for the sandbox's state file and `status`."""
        return {
            "work_dir": str(self.work_dir),
            "kubeconfig": str(self.kubeconfig_path),
            "server": self.server,
            "etcd_url": self.etcd_url,
            "ports": asdict(self.ports),
            "pids": {
                "etcd": self.etcd_proc.pid if self.etcd_proc else None,
                "kube-apiserver": self.apiserver_proc.pid if self.apiserver_proc else None,
            },
            "binaries": {
                "etcd": str(self._bins / "etcd"),
                "kube-apiserver": str(self._bins / "kube-apiserver"),
            },
            "logs": {"etcd": str(self.etcd_log), "kube-apiserver": str(self.apiserver_log)},
        }
