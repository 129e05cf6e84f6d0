"""Who may see, approve, reject and withdraw a request: pages and API agree."""

import re

import pytest

from workspaces.models import Status, WorkspaceRequest

pytestmark = pytest.mark.usefixtures("catalog")

ACTORS = ["requester", "outsider", "other_approver", "approver", "admin_user"]
# actor → (view, approve, reject, withdraw); False means refused (404 for people outside the team, else 403/400).
MATRIX = {
    "requester": (True, False, False, True),
    "outsider": (False, False, False, False),
    "other_approver": (False, False, False, False),
    "approver": (True, True, True, False),
    "admin_user": (True, True, True, False),
}


@pytest.fixture
def pending(client, requester, inference_payload, approver, outsider, other_approver, admin_user):
    client.force_login(requester)
    response = client.post("/api/workspaces/", inference_payload, content_type="application/json")
    return WorkspaceRequest.objects.get(pk=response.json()["id"])


@pytest.mark.parametrize("actor", ACTORS)
@pytest.mark.parametrize("surface", ["api", "page"])
def test_permission_matrix(client, request, pending, actor, surface):
    user = request.getfixturevalue(actor)
    can_view, can_approve, can_reject, can_withdraw = MATRIX[actor]
    client.force_login(user)
    if surface == "api":
        view = client.get(f"/api/workspaces/{pending.pk}/")
        listed = [r["id"] for r in client.get("/api/workspaces/").json()["results"]]
    else:
        view = client.get(f"/workspaces/{pending.pk}/")
        listed = [pending.pk] if f'id="request-{pending.pk}"' in client.get("/workspaces/").text else []
    assert (view.status_code == 200) is can_view
    assert (pending.pk in listed) is can_view
    if not can_view:
        assert view.status_code == 404

    for action, allowed in (("approve", can_approve), ("reject", can_reject), ("withdraw", can_withdraw)):
        WorkspaceRequest.objects.filter(pk=pending.pk).update(status=Status.PENDING_APPROVAL)
        if surface == "api":
            response = client.post(
                f"/api/workspaces/{pending.pk}/{action}/", {"note": "because"}, content_type="application/json"
            )
            expected = 200 if allowed else (404 if not can_view else 403)
            assert response.status_code == expected, (actor, action, response.json())
        else:
            url = f"/workspaces/{pending.pk}/withdraw/" if action == "withdraw" else f"/workspaces/{pending.pk}/decide/"
            response = client.post(url, {"action": action, "note": "because"})
            if not can_view:
                assert response.status_code == 404
            elif action != "withdraw" and not allowed:
                assert response.status_code == 403
        pending.refresh_from_db()
        changed = pending.status != Status.PENDING_APPROVAL
        assert changed is allowed, (actor, action, pending.status)


def test_approver_cannot_approve_their_own_request(client, approver, inference_payload):
    client.force_login(approver)
    created = client.post("/api/workspaces/", inference_payload, content_type="application/json").json()
    response = client.post(f"/api/workspaces/{created['id']}/approve/", {}, content_type="application/json")
    assert response.status_code == 403
    assert "did not make the request" in response.json()["detail"]
    assert not re.search(r'id="approval-\d+"', client.get("/workspaces/approvals/").text)


def test_api_token_authentication(client, requester, inference_payload):
    from portal.services import token_create, token_revoke

    token, raw = token_create(user=requester, name="script")
    headers = {"Authorization": f"Bearer {raw}"}
    created = client.post("/api/workspaces/", inference_payload, content_type="application/json", headers=headers)
    assert created.status_code == 201 and created.json()["requester"] == "rita"
    token_revoke(user=requester, token_id=token.pk)
    refused = client.get("/api/workspaces/", headers=headers)
    assert refused.status_code == 401 and "revoked" in refused.json()["detail"]
