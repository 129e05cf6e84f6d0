"""The portal on a real socket for end-to-end tests: Daphne in a subprocess on the test database, Chromium, sign-in."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import pytest
from django.db import connection
from django.test import Client
from playwright.sync_api import expect

from devcluster.procs import free_port, stop_child

# Import the fixtures into a conftest.py (tests/browser/conftest.py does) or use the helpers directly:
#
#     run_live_portal(inference_url=..., env={...})  context manager -> LivePortal(url, ws_url, ...)
#     live_portal_factory                            fixture: start extra servers (another stand-in, other settings)
#     chromium_browser / new_page                    fixtures: Debian's Chromium via Playwright's sync API
#     sign_in(page, portal, user)                    a session cookie for `user` in the page's browser context
#     sign_in_with_password(page, portal, username, password)   the login form, as a person does it
#
# The server is a separate process, so it sees only committed data: tests use `transactional_db` (the
# `live_portal` fixture in tests/browser/conftest.py requests it). Settings reach it through its environment.

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
# Quiet flags: no sandbox (root in a container), no background connections the machine would refuse anyway.
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run", "--disable-quic", "--disable-dev-shm-usage",
]  # fmt: skip
# Assertions wait as long as actions do (Playwright's default is 5 s): the first page of a session renders
# cold templates, and CI's two cores also run the control plane, the stand-ins and the reconciler.
expect.set_options(timeout=10_000)
# The portal's own ASGI app plus static files (htmx), served without collectstatic, like runserver does.
ASGI_APP = "tests.browser.asgi:application"


def server_database_url() -> str:
    """DATABASE_URL of the test database pytest-django created, for the server process."""
    db = connection.settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{db['NAME']}"
    user = quote(db.get("USER") or "", safe="")
    password = quote(db.get("PASSWORD") or "", safe="")
    credentials = f"{user}:{password}@" if user else ""
    return f"postgres://{credentials}{db.get('HOST') or '127.0.0.1'}:{db.get('PORT') or 5432}/{db['NAME']}"


@dataclass
class LivePortal:
    url: str
    port: int
    env: dict[str, str] = field(repr=False)
    log_path: Path | None = None

    @property
    def ws_url(self) -> str:
        return self.url.replace("http://", "ws://", 1)

    def log(self) -> str:
        """What the server wrote so far (stdout and stderr): attach it to a failing assertion."""
        return self.log_path.read_text(errors="replace") if self.log_path else ""


def _wait_ready(url: str, proc: subprocess.Popen, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"daphne exited with {proc.returncode}:\n{log.read_text(errors='replace')[-3000:]}")
        with (
            contextlib.suppress(OSError, urllib.error.URLError),
            urllib.request.urlopen(url + "/healthz", timeout=2) as r,
        ):
            if r.status == 200:
                return
        if time.monotonic() > deadline:
            raise RuntimeError(f"daphne did not answer /healthz within {timeout}s:\n{log.read_text()[-3000:]}")
        time.sleep(0.1)


@contextlib.contextmanager
def run_live_portal(
    *, inference_url: str = "", env: dict[str, str] | None = None, app: str = ASGI_APP, timeout: float = 60
) -> Iterator[LivePortal]:
    """Daphne serving the portal on 127.0.0.1:<free port> against the current test database, until exit.

    The chat rate limit is off unless `env` sets PORTAL_CHAT_RATE_PER_MINUTE: its counters live in the
    server's cache and outlast single tests. DJANGO_ALLOW_ASYNC_UNSAFE is dropped: the server must run the way
    production does, where ORM calls from async code fail loudly.
    """
    port = free_port()
    child_env = {k: v for k, v in os.environ.items() if k != "DJANGO_ALLOW_ASYNC_UNSAFE"}
    child_env.update({
        "DJANGO_SETTINGS_MODULE": "portal.settings", "DATABASE_URL": server_database_url(),
        "KAITO_INFERENCE_URL": inference_url, "PORTAL_CHAT_RATE_PER_MINUTE": "0", "PYTHONUNBUFFERED": "1",
        "PORTAL_APPLY_AFTER_APPROVAL": "off", "PORTAL_PREFLIGHT_AFTER_CREATE": "off",
    })  # fmt: skip
    child_env.update(env or {})
    with tempfile.TemporaryDirectory(prefix="live-portal-") as tmp:
        log = Path(tmp) / "daphne.log"
        with log.open("w") as out:
            cmd = [sys.executable, "-m", "daphne", "--bind", "127.0.0.1", "--port", str(port), app]
            proc = subprocess.Popen(cmd, cwd=ROOT, env=child_env, stdout=out, stderr=subprocess.STDOUT)
            portal = LivePortal(f"http://127.0.0.1:{port}", port, child_env, log)
            try:
                _wait_ready(portal.url, proc, log, timeout)
                yield portal
            finally:
                stop_child(proc)
                portal.log_path = None  # the folder goes away now


@pytest.fixture
def live_portal_factory(transactional_db):
    """start(inference_url=..., env=...) -> LivePortal, stopped when the test ends."""
    with contextlib.ExitStack() as stack:

        def start(**kwargs) -> LivePortal:
            return stack.enter_context(run_live_portal(**kwargs))

        yield start


# Playwright's sync API allows one instance per thread, and each conftest that imports `chromium_browser`
# (tests/browser, tests/e2e) gets its own session fixture: they share this one browser, counted by users.
_shared: dict = {"users": 0, "playwright": None, "browser": None}


@contextlib.contextmanager
def shared_chromium() -> Iterator:
    if _shared["users"] == 0:
        from playwright.sync_api import sync_playwright

        _shared["playwright"] = sync_playwright().start()
        _shared["browser"] = _shared["playwright"].chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    _shared["users"] += 1
    try:
        yield _shared["browser"]
    finally:
        _shared["users"] -= 1
        if _shared["users"] == 0:
            _shared["browser"].close()
            _shared["playwright"].stop()


@pytest.fixture(scope="session")
def chromium_browser():
    """Debian's Chromium (apt-get install chromium) driven by Playwright; no `playwright install` needed."""
    if not Path(CHROMIUM).exists():
        # A failure, not a skip: `make test` installs it (make chromium), so missing means a broken machine.
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium (make chromium)", pytrace=False)
    with shared_chromium() as browser:
        yield browser


@pytest.fixture
def new_page(chromium_browser):
    """new_page(width=1280, height=800) -> a Page in its own browser context (own cookies), closed afterwards."""
    contexts = []

    def make(width: int = 1280, height: int = 800):
        context = chromium_browser.new_context(viewport={"width": width, "height": height})
        context.set_default_timeout(10_000)
        contexts.append(context)
        return context.new_page()

    yield make
    for context in contexts:
        context.close()


def sign_in(page, portal: LivePortal, user) -> None:
    """Sign `user` in by giving the page's browser context a session made in the test database."""
    client = Client()
    client.force_login(user)
    cookie = {"name": "sessionid", "value": client.cookies["sessionid"].value, "url": portal.url}
    page.context.add_cookies([cookie])


def sign_in_with_password(page, portal: LivePortal, username: str, password: str) -> None:
    page.goto(portal.url + "/accounts/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("form[action='/accounts/login/'] button[type=submit]")
    page.wait_for_url(lambda url: "/accounts/login/" not in url)
