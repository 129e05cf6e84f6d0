"""A finished tuning request offers to serve its adapter: the inference form comes pre-filled."""

import html
import re

import pytest

from workspaces.models import Status, WorkspaceRequest

pytestmark = pytest.mark.usefixtures("catalog")


def test_deploy_with_this_adapter(client, requester, tuning_payload):
    client.force_login(requester)
    created = client.post("/api/workspaces/", tuning_payload, content_type="application/json").json()
    page = client.get(f"/workspaces/{created['id']}/").text
    assert 'id="deploy-adapter"' not in page  # not before the adapter exists
    WorkspaceRequest.objects.filter(pk=created["id"]).update(status=Status.SUCCEEDED)
    page = client.get(f"/workspaces/{created['id']}/").text
    link = html.unescape(re.search(r'id="deploy-adapter" href="([^"]+)"', page).group(1))
    form = client.get(link).text
    assert 'value="phi-3-mini-128k-instruct"' in form
    assert 'value="workspace-tuning-phi-3-serve"' in form
    expected = "workspace-tuning-phi-3-adapter myacr.azurecr.io/phi-3-adapter:0.0.1 workspace-tuning-phi-3-push"
    assert expected in html.unescape(form)
