"""Shared fixtures: fast password hashing, the real catalog data, users."""

import io
import os
import signal

import pytest
from django.core.management import call_command

pytest_plugins = ["devcluster.pytest_plugin", "devcluster.registry_fixtures"]

# Playwright's sync API runs an event loop in the main thread; Django's ORM in the test body
# would otherwise refuse to run (tooling-recipes.md §3, gotcha 1).
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

# A run started as a background job of a non-interactive shell inherits SIGINT ignored, and so would every
# process the tests start: the tests that press Ctrl-C on `manage.py serve` or a pytest run would then wait in
# vain. Handling SIGINT here gives the children the default disposition again (a handler resets on exec).
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(scope="session")
def django_db_modify_db_settings():
    """One SQLite test database per pytest process, so that parallel runs never share a file."""
    from django.conf import settings

    database = settings.DATABASES["default"]
    if database["ENGINE"].endswith("sqlite3"):
        database["TEST"]["NAME"] = str(settings.BASE_DIR / f"test_db_{os.getpid()}.sqlite3")


@pytest.fixture(autouse=True)
def _test_settings(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    # Tests that exercise applying opt in with "inline" and a cluster; the rest must not reach for one.
    settings.APPLY_AFTER_APPROVAL = "off"
    settings.PREFLIGHT_AFTER_CREATE = "off"


@pytest.fixture
def catalog(db):
    """The catalog loaded from the project's real data files (KAITO v0.12.0)."""
    from catalog.models import Preset

    if not Preset.objects.exists():
        call_command("sync_catalog", stdout=io.StringIO())


@pytest.fixture
def user(db, django_user_model):
    return django_user_model.objects.create_user(username="alice", password="pw-alice-123")


@pytest.fixture
def user_client(client, user):
    client.force_login(user)
    return client


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items):
    # Playwright's sync API keeps an event loop running in the main thread from the first browser test to
    # the end of the session; pytest-asyncio tests after it would fail ("Runner.run() cannot be called from
    # a running event loop"), so browser tests run last (a stable sort keeps the order otherwise).
    items.sort(key=lambda item: item.get_closest_marker("browser") is not None)
