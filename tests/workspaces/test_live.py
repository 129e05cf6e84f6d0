"""Live updates: WebSocket consumers push the right fragment to the right people; polling is the fallback."""

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.test import Client

from portal.asgi import application
from tests.workspaces import kaito_play
from workspaces import notify, services
from workspaces.models import Status, WorkspaceRequest

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("catalog")]
ORIGIN = (b"origin", b"http://testserver")


def session_cookie(user):
    client = Client()
    client.force_login(user)
    return f"sessionid={client.cookies['sessionid'].value}".encode()


async def connect(user, query=""):
    headers = [ORIGIN] + ([(b"cookie", await sync_to_async(session_cookie)(user))] if user else [])
    communicator = WebsocketCommunicator(application, f"/ws/requests/{query}", headers=headers)
    connected, code = await communicator.connect()
    return communicator, connected, code


def create(user, payload):
    client = Client()
    client.force_login(user)
    response = client.post("/api/workspaces/", payload, content_type="application/json")
    assert response.status_code == 201, response.json()
    return WorkspaceRequest.objects.get(pk=response.json()["id"])


async def test_anonymous_and_foreign_origins_are_refused(requester, inference_payload):
    _, connected, _ = await connect(None)
    assert not connected
    no_origin = WebsocketCommunicator(application, "/ws/requests/")
    assert (await no_origin.connect())[0] is False


async def test_list_row_is_pushed_to_team_members_only(requester, approver, outsider, inference_payload):
    member, ok, _ = await connect(requester)
    stranger, ok2, _ = await connect(outsider)
    assert ok and ok2
    request = await sync_to_async(create)(requester, inference_payload)
    created = await member.receive_from(timeout=5)
    assert created.startswith('<tbody hx-swap-oob="afterbegin:#request-rows">')
    assert f'<tr id="request-{request.pk}"' in created and "Pending approval" in created
    await sync_to_async(services.request_approve)(request=request, actor=approver)
    changed = await member.receive_from(timeout=5)
    assert changed.startswith(f'<tr id="request-{request.pk}" hx-swap-oob="true"') and "Approved" in changed
    assert await stranger.receive_nothing(timeout=0.5)
    await member.disconnect()
    await stranger.disconnect()


async def test_approval_queue_gains_and_loses_rows(requester, approver, inference_payload):
    queue, ok, _ = await connect(approver, "?approvals=1")
    assert ok
    request = await sync_to_async(create)(requester, inference_payload)
    added = await queue.receive_from(timeout=5)
    # Two <tbody>s, the row first: the browser drops a <tbody> that follows a top-level <tr> (tests/e2e found it).
    assert added.startswith('<tbody hx-swap-oob="beforeend:#approval-rows">') and f'id="approve-{request.pk}"' in added
    assert added.endswith('<tbody hx-swap-oob="delete:#approvals-empty"></tbody>')
    await sync_to_async(services.request_approve)(request=request, actor=approver)
    removed = await queue.receive_from(timeout=5)
    assert removed == f'<tr id="approval-{request.pk}" hx-swap-oob="delete"></tr>'
    await queue.disconnect()


async def test_nobody_gets_decision_buttons_for_their_own_request(approver, inference_payload):
    own_queue, _, _ = await connect(approver, "?approvals=1")
    await sync_to_async(create)(approver, inference_payload)
    assert await own_queue.receive_nothing(timeout=0.5)  # no row, and no removal of a row the page never had
    await own_queue.disconnect()


async def test_the_queue_hears_nothing_once_the_row_is_gone(requester, approver, inference_payload):
    """After the decision removed the row, KAITO's progress has no row to update: htmx would report each message."""
    queue, ok, _ = await connect(approver, "?approvals=1")
    assert ok
    request = await sync_to_async(create)(requester, inference_payload)
    assert 'hx-swap-oob="beforeend:#approval-rows"' in await queue.receive_from(timeout=5)
    await sync_to_async(services.request_approve)(request=request, actor=approver)
    assert await queue.receive_from(timeout=5) == f'<tr id="approval-{request.pk}" hx-swap-oob="delete"></tr>'
    await sync_to_async(WorkspaceRequest.objects.filter(pk=request.pk).update)(status=Status.PROVISIONING)
    await sync_to_async(notify.request_changed)(request_id=request.pk)
    assert await queue.receive_nothing(timeout=0.5)
    await queue.disconnect()


async def test_detail_page_needs_permission_and_gets_status_and_history(
    requester, approver, outsider, inference_payload
):
    request = await sync_to_async(create)(requester, inference_payload)
    _, allowed, _ = await connect(outsider, f"?request={request.pk}")
    assert not allowed
    page, ok, _ = await connect(requester, f"?request={request.pk}")
    assert ok
    await sync_to_async(services.request_approve)(request=request, actor=approver)
    html = await page.receive_from(timeout=5)
    assert html.startswith('<section class="card" id="request-status" hx-swap-oob="true"')
    assert '<section class="card" id="events" hx-swap-oob="true">' in html
    assert "Pending approval → Approved" in html
    await page.disconnect()


def test_polling_fallback_stops_once_final(client, requester, approver, inference_payload):
    request = create(requester, inference_payload)
    client.force_login(requester)
    live = client.get(f"/workspaces/{request.pk}/live/?mode=list")
    assert live.status_code == 200 and 'hx-trigger="every 10s [wsDown()]"' in live.text
    services.request_withdraw(request=request, actor=requester)
    final = client.get(f"/workspaces/{request.pk}/live/?mode=detail")
    assert final.status_code == 286  # htmx stops polling
    assert "Withdrawn" in final.text and "hx-trigger" not in final.text.split('id="events"')[0]
    client.force_login(approver)
    gone = client.get(f"/workspaces/{request.pk}/live/?mode=approvals")
    assert gone.status_code == 286 and 'hx-swap-oob="delete"' in gone.text


@pytest.mark.cluster
async def test_kaito_status_patch_reaches_the_browser(cluster, team_ns, requester, approver, inference_payload):
    from tests.workspaces.test_reconciler import make_reconciler

    request = await sync_to_async(create)(requester, inference_payload)
    await sync_to_async(services.request_approve)(request=request, actor=approver)
    page, ok, _ = await connect(requester, f"?request={request.pk}")
    assert ok
    kaito_play.patch_status(cluster.custom, team_ns, "phi-chat", kaito_play.ready())
    reconciler = make_reconciler(cluster, team_ns)
    await sync_to_async(reconciler.resync)()
    html = await page.receive_from(timeout=5)
    assert "Ready" in html and "The model is ready to chat." in html
    status = await sync_to_async(lambda: WorkspaceRequest.objects.get(pk=request.pk).status)()
    assert status == Status.READY
    await page.disconnect()
