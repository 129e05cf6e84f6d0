"""Chat fixtures: stand-in, READY workspaces, tokens (fixtures.py), tests/workspaces' teams, tests/browser's Daphne."""

from tests.browser.fixtures import live_portal_factory  # noqa: F401
from tests.chat.fixtures import _chat_settings, legacy_standin, preset, standin, token, workspace  # noqa: F401
from tests.workspaces.conftest import admin_user, approver, other_team, outsider, requester, team  # noqa: F401
