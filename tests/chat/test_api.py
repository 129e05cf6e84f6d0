"""The OpenAI-compatible endpoint in process: tokens, the same access rules, OpenAI-shaped errors, relayed statuses."""

import json

import pytest
from asgiref.sync import sync_to_async
from django.test import AsyncClient

from devcluster.model_standin import tokenize
from devcluster.procs import free_port
from portal import metrics
from portal.models import ApiToken
from portal.services import token_create, token_revoke
from tests.chat.fixtures import ADAPTER, BASE, chat_message, is_turn_end, make_workspace, receive_until, ws_connect
from workspaces.models import Status, WorkspaceRequest

pytestmark = pytest.mark.django_db(transaction=True)
HELLO = [{"role": "user", "content": "hello there"}]


def bearer(raw):
    return {"Authorization": f"Bearer {raw}"}


async def post(pk, body, headers, client=None):
    client = client or AsyncClient()
    return await client.post(f"/api/workspaces/{pk}/v1/chat/completions", json.dumps(body) if not isinstance(body, bytes) else body,
                             content_type="application/json", headers=headers)  # fmt: skip


async def body_of(response):
    if response.streaming:
        return b"".join([part async for part in response.streaming_content])
    return response.content


def assert_openai_error(response, status, words):
    assert response.status_code == status
    error = json.loads(response.content)["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["code"] == status
    assert words in error["message"], error


async def test_models_lists_base_model_and_adapter(standin, workspace, token):
    response = await AsyncClient().get(f"/api/workspaces/{workspace.pk}/v1/models", headers=bearer(token))
    assert response.status_code == 200
    data = json.loads(await body_of(response))
    assert [m["id"] for m in data["data"]] == [BASE, ADAPTER]
    assert (await ApiToken.objects.aget(prefix=token[:10])).last_used_at is not None


async def test_completion_whole_and_streamed(standin, workspace, token):
    whole = await post(workspace.pk, {"model": BASE, "messages": HELLO}, bearer(token))
    assert whole.status_code == 200
    answer = json.loads(await body_of(whole))
    assert answer["object"] == "chat.completion"
    assert answer["choices"][0]["message"]["content"] == standin.answer(BASE, "hello there")
    open_before = metrics.CHAT_STREAMS_OPEN._value.get()
    streamed = await post(workspace.pk, {"model": ADAPTER, "messages": HELLO, "stream": True}, bearer(token))
    assert metrics.CHAT_STREAMS_OPEN._value.get() == open_before + 1
    assert streamed.status_code == 200 and streamed["Content-Type"].startswith("text/event-stream")
    frames = (await body_of(streamed)).decode().split("\n\n")
    assert frames[-2:] == ["data: [DONE]", ""]
    pieces = [json.loads(f[6:])["choices"][0]["delta"].get("content") for f in frames[:-2]]
    assert [p for p in pieces if p] == tokenize(standin.answer(ADAPTER, "hello there"))
    assert metrics.CHAT_STREAMS_OPEN._value.get() == open_before


async def test_legacy_workspace_is_translated(legacy_standin, workspace, token):
    models = await AsyncClient().get(f"/api/workspaces/{workspace.pk}/v1/models", headers=bearer(token))
    assert [m["id"] for m in json.loads(await body_of(models))["data"]] == [BASE]
    whole = await post(workspace.pk, {"model": BASE, "messages": HELLO}, bearer(token))
    assert json.loads(await body_of(whole))["choices"][0]["message"]["content"] == legacy_standin.answer(
        BASE, "hello there"
    )
    streamed = await post(workspace.pk, {"model": BASE, "messages": HELLO, "stream": True}, bearer(token))
    assert (await body_of(streamed)).endswith(b"data: [DONE]\n\n")
    assert legacy_standin.requests()[-1]["path"] == "/chat"


@pytest.mark.parametrize(
    ("header", "words"),
    [
        (None, "Send your portal API token as 'Authorization: Bearer kp_…'"),
        ("Bearer kp_not-a-real-token", "Invalid or revoked API token."),
        ("Basic dXNlcjpwdw==", "must be 'Bearer <token>'"),
        ("Bearer", "must be 'Bearer <token>'"),
    ],
)
async def test_no_or_bad_token_is_401_in_openai_shape(standin, workspace, header, words):
    headers = {"Authorization": header} if header else {}
    for response in (
        await AsyncClient().get(f"/api/workspaces/{workspace.pk}/v1/models", headers=headers),
        await post(workspace.pk, {"model": BASE, "messages": HELLO}, headers),
    ):
        assert_openai_error(response, 401, words)
        assert response["WWW-Authenticate"] == 'Bearer realm="kaito-portal"'
    assert standin.stats()["requests_total"] == 0


async def test_a_revoked_token_stops_working(standin, workspace, requester):
    token, raw = await sync_to_async(token_create)(user=requester, name="short-lived")
    assert (
        await AsyncClient().get(f"/api/workspaces/{workspace.pk}/v1/models", headers=bearer(raw))
    ).status_code == 200
    await sync_to_async(token_revoke)(user=requester, token_id=token.pk)
    assert_openai_error(await post(workspace.pk, {"model": BASE, "messages": HELLO}, bearer(raw)), 401, "revoked")


async def test_access_rules_are_the_pages_rules(
    standin, team, other_team, workspace, requester, outsider, preset, admin_user
):
    theirs = await sync_to_async(token_create)(user=outsider, name="t")
    assert_openai_error(
        await post(workspace.pk, {"model": BASE, "messages": HELLO}, bearer(theirs[1])), 404, "No such workspace"
    )
    mine = (await sync_to_async(token_create)(user=requester, name="t"))[1]
    assert_openai_error(await post(999999, {"model": BASE, "messages": HELLO}, bearer(mine)), 404, "No such workspace")
    provisioning = await sync_to_async(make_workspace)(
        team, requester, preset, name="later", status=Status.PROVISIONING
    )
    response = await post(provisioning.pk, {"model": BASE, "messages": HELLO}, bearer(mine))
    assert_openai_error(
        response, 409, "The workspace is provisioning; chat opens when it is ready. Now: Waiting for a GPU node."
    )
    tuning = await sync_to_async(make_workspace)(
        team, requester, preset, name="tune", kind="tuning", status=Status.SUCCEEDED
    )
    assert_openai_error(
        await post(tuning.pk, {"model": BASE, "messages": HELLO}, bearer(mine)), 409, "fine-tuning workspace"
    )
    admin = (await sync_to_async(token_create)(user=admin_user, name="t"))[1]
    assert (await post(workspace.pk, {"model": BASE, "messages": HELLO}, bearer(admin))).status_code == 200
    assert standin.stats()["requests"].get("POST /v1/chat/completions") == 1


async def test_a_browser_session_works_but_a_post_needs_the_csrf_token(standin, workspace, requester):
    client = AsyncClient(enforce_csrf_checks=True)
    await client.aforce_login(requester)
    listed = await client.get(f"/api/workspaces/{workspace.pk}/v1/models")
    assert listed.status_code == 200
    assert_openai_error(await post(workspace.pk, {"model": BASE, "messages": HELLO}, {}, client), 403, "CSRF")
    assert standin.stats()["requests"].get("POST /v1/chat/completions") is None


@pytest.mark.parametrize(
    ("fault", "status", "words", "counted_as"),
    [
        ("429", 429, "Too many requests: waiting queue (257) exceeds max-num-seqs (256).", "other"),
        ("500", 500, "Stand-in fault: internal server error", "upstream_error"),
        ("503", 503, "Stand-in fault: service unavailable", "not_ready"),
        ("404", 404, f"The model `{BASE}` does not exist.", "not_found"),
    ],
)
async def test_upstream_errors_are_relayed_with_their_status(
    standin, workspace, token, fault, status, words, counted_as
):
    # portal/metrics.py knows no "rate_limited" kind (yet): a model's 429 counts as "other" there.
    counter = metrics.CHAT_UPSTREAM_ERRORS.labels(counted_as)
    before = counter._value.get()
    standin.add_fault(fault)
    response = await post(workspace.pk, {"model": BASE, "messages": HELLO, "stream": True}, bearer(token))
    assert response.status_code == status
    assert words in json.loads(await body_of(response))["error"]["message"]
    assert counter._value.get() == before + 1


async def test_unreachable_model_is_502_and_bad_input_is_400(settings, workspace, token):
    settings.KAITO_INFERENCE_URL = f"http://127.0.0.1:{free_port()}"
    await WorkspaceRequest.objects.filter(pk=workspace.pk).aupdate(chat_protocol="openai")
    assert_openai_error(
        await post(workspace.pk, {"model": BASE, "messages": HELLO}, bearer(token)),
        502,
        "Cannot reach the model server",
    )
    assert_openai_error(await post(workspace.pk, b"{not json", bearer(token)), 400, "must be a JSON object")
    wrong = await AsyncClient().get(f"/api/workspaces/{workspace.pk}/v1/chat/completions", headers=bearer(token))
    assert_openai_error(wrong, 405, "Use POST.")


async def test_rate_limit_is_shared_with_the_chat_page(standin, settings, workspace, requester, token):
    settings.CHAT_RATE_PER_MINUTE = 2
    communicator, _, _ = await ws_connect(requester, f"/ws/chat/{workspace.pk}/")
    await communicator.send_to(text_data=chat_message("from the page"))
    await receive_until(communicator, is_turn_end)
    await communicator.disconnect()
    assert (await post(workspace.pk, {"model": BASE, "messages": HELLO}, bearer(token))).status_code == 200
    limited = await post(workspace.pk, {"model": BASE, "messages": HELLO}, bearer(token))
    assert_openai_error(
        limited, 429, "Too many chat requests: at most 2 a minute per user (the chat page and the API count together)."
    )
    assert 1 <= int(limited["Retry-After"]) <= 60
    assert standin.stats()["requests"]["POST /v1/chat/completions"] == 2


async def test_a_stream_cut_mid_answer_ends_with_an_error_event_not_a_clean_end(standin, workspace, token):
    open_before = metrics.CHAT_STREAMS_OPEN._value.get()
    standin.add_fault("cut", after_tokens=2)
    response = await post(workspace.pk, {"model": BASE, "messages": HELLO, "stream": True}, bearer(token))
    assert response.status_code == 200
    frames = [f for f in (await body_of(response)).decode().split("\n\n") if f]
    assert "[DONE]" not in frames[-1]
    error = json.loads(frames[-1].removeprefix("data: "))["error"]
    assert error["type"] == "stream_cut" and "closed the connection mid-answer" in error["message"]
    assert metrics.CHAT_STREAMS_OPEN._value.get() == open_before
