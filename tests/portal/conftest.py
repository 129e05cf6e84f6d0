"""A migrated SQLite file for the portal's subprocesses (daphne, manage.py reconcile)."""

import pytest

from tests.portal.servers import clean_env, manage


@pytest.fixture(scope="session")
def migrated_sqlite(tmp_path_factory):
    path = tmp_path_factory.mktemp("portal-db") / "portal.sqlite3"
    result = manage("migrate", "--no-input", "-v0", env=clean_env(DATABASE_URL=f"sqlite:///{path}"), timeout=300)
    assert result.returncode == 0, result.stderr
    return f"sqlite:///{path}"
