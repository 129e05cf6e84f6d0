"""Build distribution's registry from the Go module proxy; run it on 127.0.0.1 with htpasswd or token auth."""

from __future__ import annotations

import argparse
import base64
import hashlib
import http.client
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from urllib.parse import urljoin

import yaml

from devcluster import procs
from devcluster.build import BuildError, cache_root, go_env
from devcluster.token_standin import Grants, TokenStandin

GO_DIR = Path(__file__).resolve().parent / "registry"
MODULE = "github.com/distribution/distribution/v3"
PACKAGES = {"registry": f"{MODULE}/cmd/registry", "htpasswd": "./htpasswd"}


class RegistryError(RuntimeError):
    """The local registry could not be started; the message carries its log."""


def read_version(go_mod: Path = GO_DIR / "go.mod") -> str:
    """The distribution version the wrapper's go.mod pins."""
    match = re.search(rf"^\s*{re.escape(MODULE)} (v\S+)", go_mod.read_text(), re.MULTILINE)
    if not match:
        raise BuildError(f"{go_mod} does not require {MODULE}")
    return match.group(1)


def bin_dir() -> Path:
    """Where the binaries for the pinned version live: <cache>/registry/<version>/ (outside the repo)."""
    return cache_root() / "registry" / read_version()


def ensure_binaries(force: bool = False, log: Callable[[str], None] | None = None) -> Path:
    """Build the registry and the htpasswd helper when missing (or with force); return their folder."""
    say = log or (lambda msg: print(f"[registry] {msg}", file=sys.stderr, flush=True))
    dest = bin_dir()
    todo = [name for name in PACKAGES if force or not os.access(dest / name, os.X_OK)]
    if not todo:
        return dest
    go = shutil.which("go")
    if not go:
        raise BuildError("the `go` command is not on PATH; Go >= 1.26 builds the local registry")
    dest.mkdir(parents=True, exist_ok=True)
    version = read_version()
    for name in todo:
        partial = dest / f".{name}.partial"  # an interrupted build never leaves a half binary
        ldflags = f"-s -w -X {MODULE}/version.version={version}" if name == "registry" else "-s -w"
        cmd = [go, "build", "-ldflags", ldflags, "-o", str(partial), PACKAGES[name]]
        say(f"building {name} (distribution {version}) -> {dest / name}")
        started = time.monotonic()
        proc = subprocess.run(cmd, cwd=GO_DIR, env=go_env(), capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            partial.unlink(missing_ok=True)
            raise BuildError(
                f"go build of {name} failed (exit {proc.returncode}):\n{(proc.stderr + proc.stdout).strip()}"
            )
        partial.chmod(0o755)
        partial.replace(dest / name)
        say(f"built {name} in {time.monotonic() - started:.1f}s")
    return dest


def htpasswd_lines(users: Mapping[str, str], helper: Path) -> str:
    """bcrypt htpasswd entries (the only kind distribution accepts), made by the Go helper."""
    text = "".join(f"{user}:{password}\n" for user, password in users.items())
    proc = subprocess.run([str(helper)], input=text, capture_output=True, text=True, check=False, timeout=60)
    if proc.returncode != 0:
        raise RegistryError(f"htpasswd helper failed: {proc.stderr.strip()}")
    return proc.stdout


class LocalRegistry:
    """distribution's registry on 127.0.0.1:<free port> with a generated config; stop() removes everything.

    auth="htpasswd": every user may push and pull. auth="token": a TokenStandin issues JWTs with the
    actions `grants` allow (user -> repository glob -> actions). auth="none": anonymous.
    """

    def __init__(
        self, auth: str = "htpasswd", users: Mapping[str, str] | None = None, grants: Grants | None = None
    ) -> None:
        if auth not in ("htpasswd", "token", "none"):
            raise ValueError(f"unknown auth {auth!r}")
        self.auth = auth
        self.users = dict(users or {})
        self.grants = grants or {user: {"*": ["push", "pull", "delete"]} for user in self.users}
        self.port = 0
        self.workdir: Path | None = None
        self.standin: TokenStandin | None = None
        self.startup_seconds = 0.0
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    @property
    def log_path(self) -> Path:
        assert self.workdir is not None
        return self.workdir / "registry.log"

    def _config(self) -> dict[str, object]:
        assert self.workdir is not None
        config: dict[str, object] = {
            "version": 0.1,
            "log": {"level": "info", "accesslog": {"disabled": False}},
            "storage": {
                "filesystem": {"rootdirectory": str(self.workdir / "data")},
                "delete": {"enabled": True},
                "maintenance": {"uploadpurging": {"enabled": False}},
            },
            "http": {"addr": self.host, "secret": secrets.token_hex(16)},
        }
        if self.auth == "htpasswd":
            (self.workdir / "htpasswd").write_text(htpasswd_lines(self.users, bin_dir() / "htpasswd"))
            config["auth"] = {"htpasswd": {"realm": "kaito-portal-test", "path": str(self.workdir / "htpasswd")}}
        elif self.auth == "token":
            assert self.standin is not None
            bundle = self.standin.write_bundle(self.workdir / "token-ca.pem")
            config["auth"] = {
                "token": {
                    "realm": self.standin.realm,
                    "service": self.standin.service,
                    "issuer": self.standin.issuer,
                    "rootcertbundle": str(bundle),
                }
            }
        return config

    def start(self, timeout: float = 30.0) -> LocalRegistry:
        binary = ensure_binaries() / "registry"
        started = time.monotonic()
        self.workdir = Path(tempfile.mkdtemp(prefix="kaito-portal-registry-"))
        try:
            if self.auth == "token":
                self.standin = TokenStandin(self.users, self.grants).start()
            for _attempt in range(3):  # another process may take the free port before the registry binds it
                self.port = procs.free_port()
                config = self.workdir / "config.yml"
                config.write_text(yaml.safe_dump(self._config(), sort_keys=False))
                # distribution v3 exports OpenTelemetry traces to localhost:4318 by default; env(1) turns
                # that off and execs the registry, so the pid (and its process group) stays the same.
                otel_off = ["env", "OTEL_TRACES_EXPORTER=none", "OTEL_SDK_DISABLED=true"]
                cmd = [*otel_off, str(binary), "serve", str(config)]
                self._proc = procs.spawn(cmd, self.log_path, detached=False)
                if self._wait_ready(timeout):
                    self.startup_seconds = time.monotonic() - started
                    return self
                if "address already in use" not in procs.tail(self.log_path):
                    break
                self._stop_process()
            raise RegistryError(
                f"the registry did not answer on {self.url} within {timeout:g}s:\n{procs.tail(self.log_path)}"
            )
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                return False
            try:
                status, _, _ = self.api("GET", "/v2/")
                if status in (200, 401):
                    return True
            except OSError:
                pass
            time.sleep(0.1)
        return False

    def _stop_process(self) -> None:
        if self._proc is not None:
            procs.stop_pid(self._proc.pid, timeout=10, proc=self._proc)
            self._proc = None

    def stop(self) -> None:
        """Stop the registry and the stand-in and delete the work folder (idempotent)."""
        self._stop_process()
        if self.standin is not None:
            self.standin.stop()
            self.standin = None
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None

    def __enter__(self) -> LocalRegistry:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    def api(
        self, method: str, path: str, *, body: bytes = b"", headers: Mapping[str, str] | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        """A raw request to the registry (tests and fixtures; the portal uses the preflight client)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request(method, path, body=body, headers=dict(headers or {}))
            reply = conn.getresponse()
            return reply.status, {k.lower(): v for k, v in reply.getheaders()}, reply.read()
        finally:
            conn.close()

    def _auth_header(self, user: str, repository: str) -> dict[str, str]:
        basic = base64.b64encode(f"{user}:{self.users[user]}".encode()).decode()
        if self.auth != "token":
            return {"Authorization": f"Basic {basic}"} if self.auth == "htpasswd" else {}
        assert self.standin is not None
        token = self.standin.sign(
            user,
            [
                {
                    "type": "repository",
                    "name": repository,
                    "actions": self.standin.allowed(user, repository, ["push", "pull"]),
                }
            ],
        )
        return {"Authorization": f"Bearer {token}"}

    def push_image(self, repository: str, tag: str, user: str) -> str:
        """Push a tiny OCI image (config + one layer) as `user`; return the manifest digest."""
        auth = self._auth_header(user, repository)
        config = json.dumps(
            {"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}}
        ).encode()
        layer = b"kaito-portal preflight test layer\n"
        for blob in (config, layer):
            status, headers, body = self.api("POST", f"/v2/{repository}/blobs/uploads/", headers=auth)
            if status != 202:
                raise RegistryError(f"starting a blob upload failed: HTTP {status} {body[:200]!r}")
            location = urljoin(f"{self.url}/", headers["location"])
            digest = "sha256:" + hashlib.sha256(blob).hexdigest()
            target = location.removeprefix(self.url) + ("&" if "?" in location else "?") + f"digest={digest}"
            status, _, body = self.api(
                "PUT", target, body=blob, headers={**auth, "Content-Type": "application/octet-stream"}
            )
            if status != 201:
                raise RegistryError(f"finishing a blob upload failed: HTTP {status} {body[:200]!r}")
        manifest = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": _descriptor("application/vnd.oci.image.config.v1+json", config),
            "layers": [_descriptor("application/vnd.oci.image.layer.v1.tar", layer)],
            "annotations": {"sh.kaito.model.name": "preflight-test"},
        }
        raw = json.dumps(manifest).encode()
        headers = {**auth, "Content-Type": "application/vnd.oci.image.manifest.v1+json"}
        status, reply, body = self.api("PUT", f"/v2/{repository}/manifests/{tag}", body=raw, headers=headers)
        if status != 201:
            raise RegistryError(f"pushing the manifest failed: HTTP {status} {body[:300]!r}")
        return reply.get("docker-content-digest", "sha256:" + hashlib.sha256(raw).hexdigest())


def _descriptor(media_type: str, blob: bytes) -> dict[str, object]:
    return {"mediaType": media_type, "digest": "sha256:" + hashlib.sha256(blob).hexdigest(), "size": len(blob)}


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: `build` the binaries, or `run` a registry in the foreground until Ctrl-C."""
    parser = argparse.ArgumentParser(prog="python -m devcluster.registry", description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    build = sub.add_parser("build", help="build the registry and htpasswd helper into the cache if missing")
    build.add_argument("--force", action="store_true", help="rebuild even if the binaries exist")
    run = sub.add_parser("run", help="serve a registry until Ctrl-C (user 'admin', password printed)")
    run.add_argument("--auth", choices=("htpasswd", "token", "none"), default="htpasswd")
    args = parser.parse_args(argv)
    try:
        if args.cmd == "build":
            print(ensure_binaries(force=args.force))
            return 0
        password = secrets.token_urlsafe(12)
        # SIGTERM (kill, CI teardown) unwinds like Ctrl-C, so the registry stops and its folder goes.
        signal.signal(signal.SIGTERM, lambda _sig, _frame: sys.exit(0))
        with LocalRegistry(args.auth, {"admin": password}) as registry:
            print(f"registry {registry.url} (auth {args.auth}; user admin, password {password}); Ctrl-C stops it")
            while True:
                time.sleep(3600)
    except BuildError as err:
        print(f"build failed: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
