"""Build helm from the Go module proxy into the project cache, and render the chart with `helm template`."""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from devcluster.build import BuildError, cache_root, go_env

TOOLS_DIR = Path(__file__).resolve().parent / "tools"
CHART_DIR = Path(__file__).resolve().parent / "helm" / "kaito-portal"
MODULE = "helm.sh/helm/v3"


def read_version(go_mod: Path = TOOLS_DIR / "go.mod") -> str:
    """The helm version the wrapper's go.mod pins."""
    match = re.search(rf"^\s*(?:require\s+)?{re.escape(MODULE)} (v\S+)", go_mod.read_text(), re.MULTILINE)
    if not match:
        raise BuildError(f"{go_mod} does not require {MODULE}")
    return match.group(1)


def read_kubernetes_minor(go_mod: Path = TOOLS_DIR / "go.mod") -> str:
    """The Kubernetes minor version of helm's client-go (v0.37.x is Kubernetes 1.37), as helm's Makefile stamps it."""
    match = re.search(r"^\s*k8s.io/client-go v0\.(\d+)\.", go_mod.read_text(), re.MULTILINE)
    if not match:
        raise BuildError(f"{go_mod} does not list k8s.io/client-go")
    return match.group(1)


def helm_path() -> Path:
    """<cache>/helm/<version>/helm, outside the repository (KAITO_PORTAL_CACHE or ~/.cache/kaito-portal)."""
    return cache_root() / "helm" / read_version() / "helm"


def ensure_helm(force: bool = False, log: Callable[[str], None] | None = None) -> Path:
    """Build helm when missing (or with force) and return its path; a no-op that calls no `go` otherwise."""
    say = log or (lambda msg: print(f"[helm] {msg}", file=sys.stderr, flush=True))
    target = helm_path()
    if not force and os.access(target, os.X_OK):
        return target
    go = shutil.which("go")
    if not go:
        raise BuildError("the `go` command is not on PATH; Go >= 1.26 builds helm from the module proxy")
    version = read_version()
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.parent / ".helm.partial"  # an interrupted build never leaves a half binary
    minor = read_kubernetes_minor()
    # Without these stamps `helm template` assumes Kubernetes v1.20 for .Capabilities and kubeVersion checks.
    stamps = [f"{MODULE}/internal/version.version={version}"] + [
        f"{MODULE}/pkg/{pkg}.k8sVersion{part}={value}"
        for pkg in ("chartutil", "lint/rules")
        for part, value in (("Major", "1"), ("Minor", minor))
    ]
    ldflags = " ".join(["-s -w", *(f"-X {stamp}" for stamp in stamps)])
    cmd = [go, "build", "-ldflags", ldflags, "-o", str(partial), f"{MODULE}/cmd/helm"]
    say(f"building helm {version} -> {target} (cold: a few minutes)")
    started = time.monotonic()
    proc = subprocess.run(cmd, cwd=TOOLS_DIR, env=go_env(), capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        partial.unlink(missing_ok=True)
        raise BuildError(f"go build of helm failed (exit {proc.returncode}):\n{(proc.stderr + proc.stdout).strip()}")
    partial.chmod(0o755)
    partial.replace(target)
    say(f"built helm in {time.monotonic() - started:.1f}s")
    return target


def require_helm() -> Path:
    """The helm binary, or an error naming the command that builds it (rendering never compiles)."""
    target = helm_path()
    if not os.access(target, os.X_OK):
        raise BuildError(f"missing {target}; run `python -m deploy.helmbin build`")
    return target


def template(
    values_files: Iterable[Path] = (),
    *,
    release: str = "kaito-portal",
    namespace: str = "kaito-portal",
    set_values: Mapping[str, str] | None = None,
    kube_version: str = "",
    chart: Path = CHART_DIR,
) -> list[dict[str, Any]]:
    """`helm template` the chart and return its objects (empty documents dropped)."""
    cmd = [str(require_helm()), "template", release, str(chart), "--namespace", namespace]
    if kube_version:
        cmd += ["--kube-version", kube_version]
    for path in values_files:
        cmd += ["--values", str(path)]
    for key, value in (set_values or {}).items():
        cmd += ["--set-string", f"{key}={value}"]
    # helm keeps its own config and cache under HELM_* paths; point them at the cache, never at $HOME's.
    home = cache_root() / "helm" / "home"
    env = {**os.environ, **{f"HELM_{k}_HOME": str(home / k.lower()) for k in ("CACHE", "CONFIG", "DATA")}}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"helm template failed (exit {proc.returncode}):\n{proc.stderr.strip()}")
    return [doc for doc in yaml.safe_load_all(proc.stdout) if doc]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.helmbin", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    build = sub.add_parser("build", help="build helm if missing; print its path")
    build.add_argument("--force", action="store_true")
    sub.add_parser("path", help="print the helm path (exit 1 if not built)")
    render = sub.add_parser("template", help="render the chart to stdout")
    render.add_argument("-f", "--values", action="append", default=[], type=Path)
    render.add_argument("--namespace", default="kaito-portal")
    args = parser.parse_args(argv)
    try:
        if args.command == "build":
            print(ensure_helm(force=args.force))
        elif args.command == "path":
            print(require_helm())
        else:
            print(yaml.safe_dump_all(template(args.values, namespace=args.namespace), sort_keys=False), end="")
    except (BuildError, RuntimeError) as exc:
        print(exc, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
