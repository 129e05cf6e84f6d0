"""The real `openai` client and a real WebSocket client against the portal served by Daphne on a real socket."""

import json
import time

import openai
import pytest
from django.test import Client
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect as ws_connect

from devcluster.model_standin import ModelStandin, tokenize
from portal.services import token_create
from tests.browser.fixtures import run_live_portal
from tests.chat.fixtures import ADAPTER, BASE, make_workspace
from workspaces.models import Message, Status

pytestmark = pytest.mark.django_db(transaction=True)
HELLO = [{"role": "user", "content": "hello there"}]


@pytest.fixture(scope="module")
def model():
    with ModelStandin(adapters=[ADAPTER]) as standin:
        yield standin


@pytest.fixture(scope="module")
def server(django_db_setup, model):
    with run_live_portal(inference_url=model.url) as portal:
        yield portal


@pytest.fixture
def portal(server, model, transactional_db):
    model.reset()
    model.token_delay = 0.0
    return server


def client_for(portal, workspace, raw, **options):
    return openai.OpenAI(
        base_url=f"{portal.url}/api/workspaces/{workspace.pk}/v1", api_key=raw, max_retries=0, **options
    )


def wait_for_no_streams(model, timeout=5.0):
    deadline = time.monotonic() + timeout
    while (stats := model.stats())["open_streams"] or stats["open_requests"]:
        assert time.monotonic() < deadline, stats
        time.sleep(0.05)
    return stats


def test_openai_client_streams_through_the_portal(portal, model, workspace, requester):
    raw = token_create(user=requester, name="script")[1]
    api = client_for(portal, workspace, raw)
    assert [m.id for m in api.models.list()] == [BASE, ADAPTER]
    model.token_delay = 0.05
    received, stamps = [], []
    for chunk in api.chat.completions.create(model=BASE, messages=HELLO, stream=True):
        if chunk.choices and chunk.choices[0].delta.content:
            received.append(chunk.choices[0].delta.content)
            stamps.append(time.monotonic())
    expected = tokenize(model.answer(BASE, "hello there"))
    assert received == expected
    # Tokens arrived as they were written (0.05 s apart), not in one piece at the end.
    assert stamps[-1] - stamps[0] >= 0.5 * 0.05 * (len(expected) - 1)
    whole = api.chat.completions.create(model=ADAPTER, messages=HELLO, temperature=0, max_tokens=5)
    assert whole.choices[0].finish_reason == "length" and whole.usage.completion_tokens == 5
    assert whole.choices[0].message.content == "".join(tokenize(model.answer(ADAPTER, "hello there"))[:5])


def test_openai_client_gets_the_right_exceptions(portal, model, team, workspace, requester, outsider, preset):
    mine, theirs = token_create(user=requester, name="a")[1], token_create(user=outsider, name="b")[1]
    with pytest.raises(openai.AuthenticationError, match="Invalid or revoked API token"):
        client_for(portal, workspace, "kp_wrong").chat.completions.create(model=BASE, messages=HELLO)
    with pytest.raises(openai.NotFoundError, match="No such workspace"):
        client_for(portal, workspace, theirs).chat.completions.create(model=BASE, messages=HELLO)
    later = make_workspace(team, requester, preset, name="later", status=Status.PROVISIONING)
    with pytest.raises(openai.ConflictError, match="chat opens when it is ready"):
        client_for(portal, later, mine).chat.completions.create(model=BASE, messages=HELLO)
    model.add_fault("429")
    with pytest.raises(openai.RateLimitError, match=r"waiting queue \(257\) exceeds max-num-seqs \(256\)"):
        client_for(portal, workspace, mine).chat.completions.create(model=BASE, messages=HELLO, stream=True)
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        client_for(portal, workspace, mine).chat.completions.create(model="no-such-adapter", messages=HELLO)


def test_a_cut_stream_is_an_error_for_the_client_not_a_short_answer(portal, model, workspace, requester):
    raw = token_create(user=requester, name="script")[1]
    model.add_fault("cut", after_tokens=3)
    received = []
    with pytest.raises(openai.APIError, match=r"closed the connection mid-answer\. The answer so far is incomplete\."):
        for chunk in client_for(portal, workspace, raw).chat.completions.create(
            model=BASE, messages=HELLO, stream=True
        ):
            if chunk.choices and chunk.choices[0].delta.content:
                received.append(chunk.choices[0].delta.content)
    assert received == tokenize(model.answer(BASE, "hello there"))[:3]
    wait_for_no_streams(model)


def test_a_client_leaving_mid_stream_closes_the_upstream(portal, model, workspace, requester):
    raw = token_create(user=requester, name="script")[1]
    model.token_delay = 0.1
    stream = client_for(portal, workspace, raw).chat.completions.create(model=BASE, messages=HELLO, stream=True)
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            break
    assert model.stats()["open_streams"] == 1
    stream.close()
    stats = wait_for_no_streams(model)
    assert (stats["streams_disconnected"], stats["streams_completed"]) == (1, 0)


def session_cookie(user):
    client = Client()
    client.force_login(user)
    return f"sessionid={client.cookies['sessionid'].value}"


def test_websocket_on_the_real_server_checks_the_origin_and_streams(portal, model, workspace, requester):
    url = f"{portal.ws_url}/ws/chat/{workspace.pk}/"
    cookie = {"Cookie": session_cookie(requester)}
    for origin in ("http://evil.example", None):
        with pytest.raises(InvalidStatus) as info:
            ws_connect(url, origin=origin, additional_headers=cookie, open_timeout=5).close()
        assert info.value.response.status_code == 403
    with pytest.raises(InvalidStatus):  # no session: the consumer refuses the handshake
        ws_connect(url, origin=portal.url, open_timeout=5).close()
    with ws_connect(url, origin=portal.url, additional_headers=cookie, open_timeout=5) as socket:
        socket.send(json.dumps({"prompt": "over the wire", "model": BASE, "temperature": "0.7", "top_p": "1",
                                "max_tokens": "100", "conversation": "", "action": "send"}))  # fmt: skip
        frames = []
        while not (frames and frames[-1].lstrip().startswith("<article")):
            frames.append(socket.recv(timeout=10))
    reply = Message.objects.get(role="assistant")
    assert reply.content == model.answer(BASE, "over the wire") and not reply.incomplete
    assert f'id="message-{reply.pk}" hx-swap-oob="true"' in frames[-1]


def test_legacy_workspace_through_the_real_server(live_portal_factory, workspace, requester):
    with ModelStandin(protocol="legacy") as legacy:
        portal = live_portal_factory(inference_url=legacy.url)
        raw = token_create(user=requester, name="script")[1]
        api = client_for(portal, workspace, raw)
        assert [m.id for m in api.models.list()] == [BASE]
        text = "".join(
            c.choices[0].delta.content or ""
            for c in api.chat.completions.create(model=BASE, messages=HELLO, stream=True)
            if c.choices
        )
        assert text == legacy.answer(BASE, "hello there")
