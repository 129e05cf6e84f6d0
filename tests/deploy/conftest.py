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
