"""Browser fixtures: the portal under Daphne with a model stand-in behind it, Chromium, signed-in pages."""

import pytest

from devcluster.model_standin import ModelStandin
from tests.browser.fixtures import chromium_browser, live_portal_factory, new_page, run_live_portal  # noqa: F401
from tests.chat.fixtures import preset  # noqa: F401  (a catalog preset the stand-in serves)
from tests.workspaces.conftest import admin_user, approver, other_team, outsider, requester, team  # noqa: F401

# Reusable by any end-to-end journey (tests/browser/test_*.py), e.g.:
#
#     @pytest.mark.browser
#     def test_journey(live_portal, new_page, requester):
#         page = new_page()                      # or new_page(width=390, height=844) for a phone
#         sign_in(page, live_portal, requester)  # from tests.browser.fixtures
#         page.goto(live_portal.url + "/workspaces/")
#
# `live_portal.standin` is the model server behind KAITO_INFERENCE_URL (faults, token delay, stats);
# `live_portal_factory` starts another server with other settings. Data comes from the test body (the
# `live_portal` fixture enables `transactional_db`, so the server process sees it).

BROWSER_ADAPTER = "phi-3-support-adapter"


@pytest.fixture(scope="session")
def browser_standin():
    """One OpenAI-compatible model stand-in (base model + one adapter) for the whole browser session."""
    with ModelStandin(adapters=[BROWSER_ADAPTER]) as standin:
        yield standin


@pytest.fixture(scope="session")
def _live_portal_server(django_db_setup, browser_standin):
    with run_live_portal(inference_url=browser_standin.url) as portal:
        yield portal


@pytest.fixture
def live_portal(_live_portal_server, browser_standin, transactional_db):
    """The session's Daphne (real sockets, WebSockets, streaming) with a clean stand-in for each test."""
    browser_standin.reset()
    browser_standin.token_delay = 0.0
    _live_portal_server.standin = browser_standin
    return _live_portal_server
