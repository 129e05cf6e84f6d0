"""The whole stack for browser journeys: local control plane, stand-ins, web + reconciler on the test database."""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass

import pytest
from django.contrib.auth.hashers import PBKDF2PasswordHasher, make_password
from kubernetes import client

from tests.browser.fixtures import chromium_browser, server_database_url  # noqa: F401
from tests.e2e.pagecheck import SHOTS, Shots
from tests.e2e.stack import run_stack
from tests.workspaces.conftest import (  # noqa: F401  (fixtures of test_regressions.py)
    approver,
    cluster,
    inference_payload,
    requester,
    team,
    team_ns,
    tuning_payload,
)
from workspaces.models import Membership, Team

# Fixtures:
#     stack     the running portal (`stack.url`, `stack.mode` = "embedded" or "redis", `stack.log()`), per test on a
#               clean database with the catalog loaded; the processes live for the session
#     people    a team in a fresh namespace of the control plane, a requester who signs in with a password and an
#               approver; `people.password`
#     shots     numbered screenshots in build/e2e/<test>/
#     new_page  a page in its own browser context (Debian's Chromium), from tests/browser/fixtures.py
#
# On the embedded defaults `manage.py serve` runs the web server and the reconciler in one process (the in-memory
# channel layer cannot cross processes); with REDIS_URL, Daphne and `manage.py reconcile` run apart, through Redis.

PASSWORD = "quick-start-pw-2026"  # a throwaway account in the test database


@pytest.fixture(scope="session")
def e2e_stack(control_plane, django_db_setup):
    """Stand-ins, web and reconciler against the session's control plane and test database, for the session."""
    lease_namespace = f"e2e-lease-{uuid.uuid4().hex[:8]}"  # no other test's reconciler holds this Lease
    with control_plane.api_client() as api:
        client.CoreV1Api(api).create_namespace({"metadata": {"name": lease_namespace}})
    with run_stack(
        kubeconfig=str(control_plane.kubeconfig_path),
        database_url=server_database_url(),
        lease_namespace=lease_namespace,
        log_dir=SHOTS / "logs",
        redis_url=os.environ.get("REDIS_URL", ""),
    ) as stack:
        yield stack


@pytest.fixture
def stack(e2e_stack, transactional_db, catalog):
    """The running portal; the test's rows are committed (the server processes read them) and flushed afterwards."""
    return e2e_stack


@dataclass
class People:
    team: Team
    requester: object
    approver: object
    password: str = PASSWORD


@pytest.fixture
def people(stack, k8s_namespace, django_user_model) -> People:
    ml = Team.objects.create(name="ML Platform", slug="ml", namespace=k8s_namespace, monthly_budget_usd=1000)
    rita = django_user_model.objects.create_user(username="rita", email="rita@example.com")
    # The server checks passwords with the deployed hashers; the test settings' fast MD5 one is not among them.
    rita.password = make_password(PASSWORD, hasher=PBKDF2PasswordHasher())
    rita.save(update_fields=["password"])
    arne = django_user_model.objects.create_user(username="arne", email="arne@example.com", password=PASSWORD)
    Membership.objects.create(team=ml, user=rita, role=Membership.Role.REQUESTER)
    Membership.objects.create(team=ml, user=arne, role=Membership.Role.APPROVER)
    return People(ml, rita, arne)


@pytest.fixture
def new_page(chromium_browser, request):  # noqa: F811 - the imported session fixture
    """new_page(width=1280, height=800): a page in its own browser context that records what went wrong in it.

    Uncaught script errors and console errors (htmx reports a fragment it could not place there) fail the test:
    a live update that silently goes nowhere looks like a page that is merely slow.
    """
    contexts, problems, frames = [], [], []
    request.node.browser_problems = problems
    request.node.websocket_frames = frames  # written next to the screenshots when the test fails

    def make(width: int = 1280, height: int = 800):
        context = chromium_browser.new_context(viewport={"width": width, "height": height})
        context.set_default_timeout(10_000)
        contexts.append(context)
        page = context.new_page()
        number = len(contexts)
        page.on("pageerror", lambda error: problems.append(f"page {number}: uncaught {error}"))
        page.on("console", lambda msg: msg.type == "error" and problems.append(f"page {number}: {msg.text}"))
        page.on(
            "websocket",
            lambda ws: ws.on("framereceived", lambda data: frames.append(f"page {number} {ws.url}\n{data}\n")),
        )
        return page

    yield make
    for context in contexts:
        context.close()
    # The browser asks every page for /favicon.ico; the portal has none.
    real = [p for p in problems if "Failed to load resource" not in p or "404" not in p]
    assert not real, f"the browser reported errors: {real}"


@pytest.fixture
def shots(request) -> Shots:
    return Shots(request.node.name)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    stack = getattr(item, "funcargs", {}).get("stack")
    if report.failed and stack is not None:
        report.sections.append((f"portal processes ({stack.mode})", stack.log()))
    if report.failed and getattr(item, "browser_problems", None):
        report.sections.append(("browser console", "\n".join(item.browser_problems)))
    if report.failed and getattr(item, "websocket_frames", None):
        path = SHOTS / "logs" / f"{item.name}-websocket.txt"
        path.write_text("\n".join(item.websocket_frames))
        report.sections.append(("websocket frames", f"{len(item.websocket_frames)} frames received: {path}"))
    return report
