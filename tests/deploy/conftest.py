"""The helm binary (built from the Go module proxy when missing) for every chart test."""

import pytest

from deploy import helmbin


@pytest.fixture(scope="session")
def helm():
    """Build helm once if missing (CI runs `python -m deploy.helmbin build` first); fail, never skip."""
    try:
        return helmbin.ensure_helm()
    except Exception as exc:
        pytest.fail(f"helm could not be built: {exc}", pytrace=False)


# The workspace fixtures (a team with a requester and an approver, a tuning payload) for the RBAC tests.
from tests.workspaces.conftest import approver, requester, team, tuning_payload  # noqa: E402, F401
