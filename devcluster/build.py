"""Build kube-apiserver and etcd from the Go wrapper module into a per-version cache folder."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

GO_DIR = Path(__file__).resolve().parent / "go"


class BuildError(RuntimeError):
    """A binary could not be built; the message carries the compiler's output."""


@dataclass(frozen=True)
class Versions:
    """Exact versions the wrapper's go.mod pins, so a bump only edits go.mod."""

    kubernetes: str
    etcd: str


def read_versions(go_mod: Path = GO_DIR / "go.mod") -> Versions:
    """Read the pinned k8s.io/kubernetes and etcd server versions from go.mod."""
    text = go_mod.read_text()

    def pinned(module: str) -> str:
        match = re.search(rf"^\s*{re.escape(module)} (v\S+)", text, re.MULTILINE)
        if not match:
            raise BuildError(f"{go_mod} does not require {module}")
        return match.group(1)

    return Versions(kubernetes=pinned("k8s.io/kubernetes"), etcd=pinned("go.etcd.io/etcd/server/v3"))


def cache_root() -> Path:
    """Return the project's cache folder (KAITO_PORTAL_CACHE, else $XDG_CACHE_HOME or ~/.cache)."""
    override = os.environ.get("KAITO_PORTAL_CACHE")
    if override:
        return Path(override).expanduser().resolve()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "kaito-portal"


def bin_dir(versions: Versions | None = None) -> Path:
    """Return the folder holding the binaries for these versions (outside the repository)."""
    v = versions or read_versions()
    return cache_root() / "devcluster" / f"kubernetes-{v.kubernetes}_etcd-{v.etcd}"


@dataclass(frozen=True)
class Binary:
    """One binary: its file name, Go main package and ldflags."""

    name: str
    package: str
    ldflags: str


def binaries(v: Versions) -> list[Binary]:
    """Describe the binaries to build, with version stamps (unstamped ones report v0.0.0)."""
    major, minor = v.kubernetes.lstrip("v").split(".")[:2]
    k8s_stamp = " ".join(
        f"-X {pkg}.{key}={value}"
        for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version")
        for key, value in (
            ("gitVersion", v.kubernetes),
            ("gitMajor", major),
            ("gitMinor", minor),
            ("gitTreeState", "clean"),
        )
    )
    return [
        Binary(
            "etcd",
            "go.etcd.io/etcd/server/v3",
            f"-s -w -X go.etcd.io/etcd/api/v3/version.GitSHA=go-module-{v.etcd}",
        ),
        Binary("kube-apiserver", "k8s.io/kubernetes/cmd/kube-apiserver", f"-s -w {k8s_stamp}"),
    ]


def go_env() -> dict[str, str]:
    """Environment for `go build`: no toolchain download, no go.work, static, reproducible paths."""
    env = dict(os.environ)
    env.update(
        GOTOOLCHAIN="local",  # fail fast instead of downloading a newer toolchain
        GOWORK="off",
        CGO_ENABLED="0",  # static binaries, no gcc needed
        # -mod=readonly: go.sum is committed, so go never needs the checksum DB or rewrites go.mod.
        # -buildvcs=false: the wrapper lives in the portal's git repo; its VCS state is irrelevant.
        GOFLAGS="-trimpath -mod=readonly -buildvcs=false",
    )
    return env


def _go() -> str:
    go = shutil.which("go")
    if not go:
        raise BuildError("the `go` command is not on PATH; install Go >= 1.24 (the project uses 1.26.8)")
    return go


def build_one(binary: Binary, dest_dir: Path, log: Callable[[str], None]) -> float:
    """Build one binary into dest_dir atomically and return the seconds it took."""
    dest_dir.mkdir(parents=True, exist_ok=True)
    target = dest_dir / binary.name
    partial = dest_dir / f".{binary.name}.partial"  # an interrupted build never leaves a half binary
    cmd = [_go(), "build", "-ldflags", binary.ldflags, "-o", str(partial), binary.package]
    log(f"building {binary.name} ({binary.package}) -> {target}")
    started = time.monotonic()
    proc = subprocess.run(cmd, cwd=GO_DIR, env=go_env(), capture_output=True, text=True, check=False)
    elapsed = time.monotonic() - started
    if proc.returncode != 0:
        partial.unlink(missing_ok=True)
        output = (proc.stderr + proc.stdout).strip()
        raise BuildError(f"go build of {binary.name} failed after {elapsed:.0f}s (exit {proc.returncode}):\n{output}")
    partial.chmod(0o755)
    partial.replace(target)
    log(f"built {binary.name} in {elapsed:.1f}s")
    return elapsed


def ensure_binaries(force: bool = False, log: Callable[[str], None] | None = None) -> Path:
    """Build whatever binary is missing (or all, with force) and return the folder holding them."""
    say = log or (lambda msg: print(f"[devcluster] {msg}", file=sys.stderr, flush=True))
    versions = read_versions()
    dest = bin_dir(versions)
    todo = [b for b in binaries(versions) if force or not os.access(dest / b.name, os.X_OK)]
    if not todo:
        say(f"binaries up to date in {dest}")
        return dest
    say(
        f"kubernetes {versions.kubernetes}, etcd {versions.etcd}; a cold build downloads ~0.6 GB of "
        "modules and compiles for several minutes"
    )
    total = sum(build_one(b, dest, say) for b in todo)
    say(f"build finished in {total:.1f}s")
    return dest


def require_binaries() -> Path:
    """Return the binary folder, or raise with the command that builds it (starting never compiles)."""
    dest = bin_dir()
    missing = [b.name for b in binaries(read_versions()) if not os.access(dest / b.name, os.X_OK)]
    if missing:
        raise BuildError(f"missing {', '.join(missing)} in {dest}; run `python -m devcluster build`")
    return dest
