"""The build entry point: versions from go.mod, the cache location, rebuild only when missing, errors."""

import os
import stat

import pytest

from devcluster import build
from devcluster.__main__ import main


def test_versions_come_from_the_wrapper_go_mod():
    v = build.read_versions()
    assert v.kubernetes == "v1.34.4"
    assert v.etcd.startswith("v3.6.")
    ldflags = {b.name: b.ldflags for b in build.binaries(v)}
    assert "-X k8s.io/component-base/version.gitVersion=v1.34.4" in ldflags["kube-apiserver"]
    assert "-X k8s.io/component-base/version.gitMinor=34" in ldflags["kube-apiserver"]


def test_cache_is_outside_the_repo_and_overridable(monkeypatch, tmp_path):
    monkeypatch.delenv("KAITO_PORTAL_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert build.bin_dir() == tmp_path / "xdg" / "kaito-portal" / "devcluster" / "kubernetes-v1.34.4_etcd-v3.6.4"
    monkeypatch.setenv("KAITO_PORTAL_CACHE", str(tmp_path / "mine"))
    assert build.bin_dir().parent == tmp_path / "mine" / "devcluster"


def _fake_binaries(dest):
    dest.mkdir(parents=True)
    for name in ("etcd", "kube-apiserver"):
        (dest / name).write_text("#!/bin/sh\n")
        (dest / name).chmod(stat.S_IRWXU)


def test_existing_binaries_are_not_rebuilt(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("KAITO_PORTAL_CACHE", str(tmp_path))
    _fake_binaries(build.bin_dir())
    monkeypatch.setattr(build, "build_one", lambda *a: pytest.fail("must not build"))
    assert main(["build"]) == 0
    out, err = capsys.readouterr()
    assert out.strip() == str(build.bin_dir())
    assert "binaries up to date" in err


def test_only_the_missing_binary_is_built(monkeypatch, tmp_path):
    monkeypatch.setenv("KAITO_PORTAL_CACHE", str(tmp_path))
    _fake_binaries(build.bin_dir())
    os.remove(build.bin_dir() / "etcd")
    built = []
    monkeypatch.setattr(build, "build_one", lambda b, dest, log: built.append(b.name) or 0.0)
    build.ensure_binaries(log=lambda msg: None)
    assert built == ["etcd"]


def test_missing_binaries_name_the_build_command(monkeypatch, tmp_path):
    monkeypatch.setenv("KAITO_PORTAL_CACHE", str(tmp_path))
    with pytest.raises(build.BuildError, match=r"missing etcd, kube-apiserver in .*python -m devcluster build"):
        build.require_binaries()


def test_a_failing_go_build_raises_with_the_compiler_message(tmp_path):
    broken = build.Binary("broken", "kaito-portal.invalid/devcluster/does-not-exist", "-s -w")
    with pytest.raises(build.BuildError) as err:
        build.build_one(broken, tmp_path, lambda msg: None)
    assert "go build of broken failed" in str(err.value)
    assert "does-not-exist" in str(err.value)
    assert list(tmp_path.iterdir()) == []  # no partial binary left


def test_cli_exits_non_zero_when_the_build_fails(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("KAITO_PORTAL_CACHE", str(tmp_path))

    def fail(*a):
        raise build.BuildError("go build of etcd failed after 3s (exit 1):\nsyntax error")

    monkeypatch.setattr(build, "build_one", fail)
    assert main(["build"]) == 1
    assert "build failed: go build of etcd failed after 3s (exit 1):\nsyntax error" in capsys.readouterr().err
