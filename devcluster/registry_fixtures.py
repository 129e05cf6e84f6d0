"""pytest plugin: session-scoped local OCI registries (htpasswd and token auth) and an image already pushed."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from devcluster.registry import LocalRegistry


@dataclass(frozen=True)
class PushedImage:
    registry: LocalRegistry
    repository: str
    tag: str
    digest: str

    @property
    def reference(self) -> str:
        return f"{self.registry.host}/{self.repository}:{self.tag}"


_STARTUP: dict[str, float] = {}


def _start(name: str, registry: LocalRegistry) -> LocalRegistry:
    try:
        registry.start()
    except Exception as err:  # BuildError (no Go, no module) and RegistryError carry the reason
        pytest.fail(f"the local {name} registry did not start: {err}", pytrace=False)
    _STARTUP[name] = registry.startup_seconds
    return registry


@pytest.fixture(scope="session")
def htpasswd_registry() -> Iterator[LocalRegistry]:
    """Registry with htpasswd auth: users `admin` and `pusher` may push anywhere (passwords in .users)."""
    users = {"admin": secrets.token_urlsafe(16), "pusher": secrets.token_urlsafe(16)}
    registry = _start("htpasswd", LocalRegistry("htpasswd", users))
    try:
        yield registry
    finally:
        registry.stop()


@pytest.fixture(scope="session")
def token_registry() -> Iterator[LocalRegistry]:
    """Registry with token auth via the stand-in: `admin` pushes anywhere, `puller` may only pull."""
    users = {"admin": secrets.token_urlsafe(16), "puller": secrets.token_urlsafe(16)}
    grants = {"admin": {"*": ["push", "pull", "delete"]}, "puller": {"*": ["pull"]}}
    registry = _start("token", LocalRegistry("token", users, grants))
    try:
        yield registry
    finally:
        registry.stop()


@pytest.fixture(scope="session")
def pushed_image(htpasswd_registry: LocalRegistry) -> PushedImage:
    """A tiny OCI image pushed by `admin` to the htpasswd registry, for "tag already exists" checks."""
    digest = htpasswd_registry.push_image("preflight/existing", "v1", "admin")
    return PushedImage(htpasswd_registry, "preflight/existing", "v1", digest)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Say how long the registries took to start."""
    for name, seconds in _STARTUP.items():
        terminalreporter.write_line(f"devcluster: {name} registry started in {seconds:.1f}s")
