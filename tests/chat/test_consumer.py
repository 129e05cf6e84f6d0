"""The chat page's WebSocket: streaming in order, both protocols, every failure told honestly, Stop, permissions."""

import html
import json
import re

import pytest
from asgiref.sync import sync_to_async

from devcluster.model_standin import tokenize
from devcluster.procs import free_port
from tests.chat.fixtures import (
    ADAPTER,
    BASE,
    ORIGIN,
    chat_message,
    is_turn_end,
    make_workspace,
    receive_until,
    wait_closed,
    ws_connect,
)
from workspaces.models import Conversation, Message, Status, WorkspaceRequest

pytestmark = pytest.mark.django_db(transaction=True)
CHUNK = re.compile(r'^<span hx-swap-oob="beforeend:#reply-(\d+)">(.*)</span>$', re.S)


def chunks_of(frames, reply_id):
    """The escaped text pieces sent for one reply, in order."""
    texts = []
    for frame in frames:
        match = CHUNK.match(frame)
        if match and int(match.group(1)) == reply_id:
            texts.append(html.unescape(match.group(2)))
    return texts


def reply_id_of(frames):
    for frame in frames:
        if match := re.search(r'<div class="msg-text" id="reply-(\d+)"></div>', frame):
            return int(match.group(1))
    raise AssertionError(f"no reply placeholder in {frames}")


async def ask(communicator, prompt, **fields):
    await communicator.send_to(text_data=chat_message(prompt, **fields))
    frames = await receive_until(communicator, is_turn_end)
    return frames, reply_id_of(frames)


async def stored(reply_id):
    return await Message.objects.aget(pk=reply_id)


async def test_tokens_stream_in_order_and_the_answer_is_stored(standin, workspace, requester):
    standin.token_delay = 0.02
    communicator, connected, _ = await ws_connect(requester, f"/ws/chat/{workspace.pk}/")
    assert connected
    frames, reply = await ask(communicator, "What is KAITO?")
    expected = standin.answer(BASE, "What is KAITO?")
    tokens, pieces = tokenize(expected), chunks_of(frames, reply)
    assert "".join(pieces) == expected  # in the order the model sent them, nothing lost or repeated
    # A fragment per token while the socket keeps up; tokens that queued up meanwhile share the next one.
    boundaries = {len("".join(tokens[:i])) for i in range(len(tokens) + 1)}
    assert all(len("".join(pieces[:i])) in boundaries for i in range(len(pieces) + 1))
    assert len(pieces) > len(tokens) / 2, pieces
    start = next(f for f in frames if 'id="transcript-empty"' in f)
    assert 'hx-swap-oob="beforeend:#transcript"' in start and "What is KAITO?" in start
    assert 'id="stop"' in start and "aria-busy" in start
    final = frames[-1]
    assert final.startswith(f'<article class="msg msg-assistant" id="message-{reply}" hx-swap-oob="true"')
    assert 'class="markdown"' in final and "Incomplete" not in final
    message = await stored(reply)
    assert (message.content, message.finish_reason, message.incomplete, message.error_kind) == (
        expected,
        "stop",
        False,
        "",
    )
    assert message.usage["completion_tokens"] == len(tokenize(expected))
    conversation = await Conversation.objects.aget(pk=message.conversation_id)
    assert (conversation.title, conversation.model, conversation.user_id) == ("What is KAITO?", BASE, requester.pk)
    assert (await WorkspaceRequest.objects.aget(pk=workspace.pk)).chat_protocol == "openai"
    await communicator.disconnect()


async def test_the_model_picker_lists_base_model_and_adapter_from_v1_models(standin, workspace, requester):
    communicator, _, _ = await ws_connect(requester, f"/ws/chat/{workspace.pk}/?model={ADAPTER}")
    picker = await communicator.receive_from(timeout=5)
    assert picker.startswith('<div class="field model-status" id="model-status" hx-swap-oob="true">')
    assert f'<option value="{BASE}">' in picker
    assert f'<option value="{ADAPTER}" selected>{ADAPTER} (adapter on {BASE})</option>' in picker
    assert "2 models" in picker
    frames, reply = await ask(communicator, "hello", model=ADAPTER)
    assert "".join(chunks_of(frames, reply)) == standin.answer(ADAPTER, "hello")
    assert (await stored(reply)).model == ADAPTER
    await communicator.disconnect()


async def test_a_conversation_continues_with_its_history(standin, workspace, requester):
    communicator, _, _ = await ws_connect(requester, f"/ws/chat/{workspace.pk}/")
    first, reply = await ask(communicator, "first question", system_prompt="Be brief.")
    conversation_id = (await stored(reply)).conversation_id
    assert f'<input type="hidden" name="conversation" id="conversation-id" value="{conversation_id}"' in first[
        -2
    ] + "".join(first)
    second, _ = await ask(communicator, "second question", conversation=str(conversation_id), system_prompt="Be brief.")
    assert not any('id="conversation-id"' in f for f in second)  # the same conversation: nothing to re-point
    sent = standin.requests()[-1]["body"]["messages"]
    assert sent == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "first question"},
        {"role": "assistant", "content": standin.answer(BASE, "first question")},
        {"role": "user", "content": "second question"},
    ]
    assert await Message.objects.filter(conversation_id=conversation_id).acount() == 4
    await communicator.disconnect()


async def test_legacy_chat_api_answers_whole_and_is_remembered(legacy_standin, workspace, requester):
    communicator, _, _ = await ws_connect(requester, f"/ws/chat/{workspace.pk}/")
    picker = await communicator.receive_from(timeout=5)
    assert "older /chat API" in picker and f'<option value="{BASE}"' in picker
    frames, reply = await ask(communicator, "hi there")
    assert chunks_of(frames, reply) == [legacy_standin.answer(BASE, "hi there")]  # no streaming in /chat
    message = await stored(reply)
    assert (message.incomplete, message.finish_reason, message.usage) == (False, "", None)
    assert (await WorkspaceRequest.objects.aget(pk=workspace.pk)).chat_protocol == "legacy"
    assert legacy_standin.requests()[-1]["path"] == "/chat"
    await communicator.disconnect()


FAILURES = [
    # fault, options, stored error kind, what the user reads, partial text kept
    ("404", {}, "not_found", f"The model `{BASE}` was not found", False),
    ("429", {}, "rate_limited", "Too many requests: waiting queue (257) exceeds max-num-seqs (256).", False),
    ("500", {}, "upstream_error", "The model server failed (HTTP 500). The server says: Stand-in fault", False),
    ("503", {}, "not_ready", "The model server is not ready (HTTP 503)", False),
    ("hang", {}, "timeout", "sent nothing for 0.5 s", False),
    (
        "cut",
        {"after_tokens": 3},
        "stream_cut",
        "closed the connection mid-answer. The answer so far is incomplete.",
        True,
    ),
    ("stall", {"after_tokens": 3}, "timeout", "sent nothing for 0.5 s. The answer so far is incomplete.", True),
    ("stream_error", {"after_tokens": 2}, "upstream_error", "the engine failed mid-answer", True),
]


@pytest.mark.parametrize(("fault", "options", "kind", "said", "partial"), FAILURES, ids=[f[0] for f in FAILURES])
async def test_failures_are_told_honestly_and_stored(
    standin, settings, workspace, requester, fault, options, kind, said, partial
):
    settings.CHAT_READ_TIMEOUT = 0.5
    standin.add_fault(fault, **options)
    communicator, _, _ = await ws_connect(requester, f"/ws/chat/{workspace.pk}/")
    frames, reply = await ask(communicator, "tell me")
    final = html.unescape(frames[-1])
    message = await stored(reply)
    assert message.incomplete and message.error_kind == kind and said in message.error_message
    assert said in final and 'class="markdown"' not in final  # never shown as a finished answer
    answer = tokenize(standin.answer(BASE, "tell me"))
    if partial:
        kept = "".join(answer[: options["after_tokens"]])
        assert message.content == kept and "".join(chunks_of(frames, reply)) == kept
        assert "Incomplete answer." in final and "Text received before it ended (incomplete):" in final
        assert kept.strip() in final
    else:
        assert message.content == "" and "No answer." in final
    assert 'id="send"' in final or any('id="chat-controls"' in f for f in frames[-1:])
    await communicator.disconnect()
    await wait_closed(standin)


async def test_unreachable_model_server(settings, workspace, requester):
    settings.KAITO_INFERENCE_URL = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    communicator, _, _ = await ws_connect(requester, f"/ws/chat/{workspace.pk}/")
    picker = await communicator.receive_from(timeout=5)
    assert "Cannot reach the model server" in picker  # the picker says so right away
    frames, reply = await ask(communicator, "anyone?")
    message = await stored(reply)
    assert (message.error_kind, message.content, message.incomplete) == ("unreachable", "", True)
    assert "No answer." in frames[-1] and "Cannot reach the model server at http://127.0.0.1:" in frames[-1]
    await communicator.disconnect()


async def test_stop_closes_the_upstream_stream_and_keeps_the_partial_text(standin, workspace, requester):
    standin.token_delay = 0.05
    communicator, _, _ = await ws_connect(requester, f"/ws/chat/{workspace.pk}/")
    await communicator.send_to(text_data=chat_message("a long answer please"))
    frames = await receive_until(
        communicator, lambda f: f.count("beforeend:#reply-") and len(f) and CHUNK.match(f) and True
    )
    frames += [await communicator.receive_from(timeout=5) for _ in range(2)]
    assert standin.stats()["open_streams"] == 1
    await communicator.send_to(text_data=json.dumps({"action": "stop", "prompt": ""}))
    frames += await receive_until(communicator, is_turn_end)
    reply = reply_id_of(frames)
    stats = await wait_closed(standin)
    assert (stats["streams_disconnected"], stats["streams_completed"]) == (1, 0)  # the socket to the model closed
    message = await stored(reply)
    full = standin.answer(BASE, "a long answer please")
    assert message.incomplete and message.error_kind == "stopped" and full.startswith(message.content)
    assert 0 < len(message.content) < len(full) and message.content == "".join(chunks_of(frames, reply))
    assert "Stopped before the answer was complete." in frames[-1] and "Incomplete answer." in frames[-1]
    await communicator.disconnect()


async def test_leaving_the_page_mid_answer_closes_the_upstream_and_stores_what_came(standin, workspace, requester):
    standin.token_delay = 0.05
    communicator, _, _ = await ws_connect(requester, f"/ws/chat/{workspace.pk}/")
    await communicator.send_to(text_data=chat_message("go on"))
    await receive_until(communicator, lambda f: bool(CHUNK.match(f)))
    await communicator.disconnect()
    stats = await wait_closed(standin)
    assert stats["streams_disconnected"] == 1
    message = await Message.objects.filter(role="assistant").alast()
    assert message.incomplete and message.error_kind == "stopped" and message.content


async def test_a_second_send_while_streaming_is_refused(standin, workspace, requester):
    standin.token_delay = 0.05
    communicator, _, _ = await ws_connect(requester, f"/ws/chat/{workspace.pk}/")
    await communicator.send_to(text_data=chat_message("one"))
    await receive_until(communicator, lambda f: bool(CHUNK.match(f)))
    await communicator.send_to(text_data=chat_message("two"))
    frames = await receive_until(communicator, lambda f: 'id="chat-notice"' in f)
    assert "An answer is still streaming" in frames[-1]
    await receive_until(communicator, is_turn_end)
    assert await Message.objects.filter(role="user").acount() == 1
    await communicator.disconnect()


XSS = (
    '<script>alert("x")</script> <img src=x onerror=alert(1)> [click](javascript:alert(1)) '
    '<a href="javascript:alert(2)">a</a> <iframe src="https://evil.example"></iframe> <b onmouseover=alert(3)>b</b> '
    "![t](https://evil.example/t.png?c=secret) [ok](https://example.com)"
)


async def test_model_output_is_inert_while_streaming_and_once_rendered(standin, workspace, requester):
    communicator, _, _ = await ws_connect(requester, f"/ws/chat/{workspace.pk}/")
    frames, _ = await ask(communicator, XSS)  # the stand-in echoes the prompt in its answer
    for frame in frames:
        assert "<script" not in frame.lower() and "<img" not in frame.lower() and "<iframe" not in frame.lower()
    final = frames[-1].split("</article>")[0]  # the answer; the controls follow it
    tags = re.findall(r"<([a-zA-Z0-9]+)([^>]*)>", final)
    assert {name for name, _ in tags} <= {"article", "header", "strong", "span", "div", "p", "a", "br"}
    for name, attributes in tags:
        assert not re.search(r"\son\w+=", attributes), (name, attributes)
        assert "javascript:" not in attributes.lower()
    links = re.findall(r"<a ([^>]*)>", final)
    assert links == [
        'href="https://evil.example/t.png?c=secret" rel="noopener noreferrer nofollow"',
        'href="https://example.com" rel="noopener noreferrer nofollow"',
    ]
    assert "&lt;script&gt;" in final and "[click](javascript:alert(1))" in final  # shown as text, inert
    await communicator.disconnect()


async def test_rate_limit_refuses_politely_without_asking_the_model(standin, settings, workspace, requester):
    settings.CHAT_RATE_PER_MINUTE = 2
    communicator, _, _ = await ws_connect(requester, f"/ws/chat/{workspace.pk}/")
    await ask(communicator, "one")
    await ask(communicator, "two")
    await communicator.send_to(text_data=chat_message("three"))
    frames = await receive_until(communicator, lambda f: 'id="chat-notice"' in f)
    assert "Too many chat requests: at most 2 a minute per user" in frames[-1]
    assert standin.stats()["requests"].get("POST /v1/chat/completions") == 2
    assert await Message.objects.filter(role="user").acount() == 2
    await communicator.disconnect()


async def test_invalid_parameters_are_explained(standin, workspace, requester):
    communicator, _, _ = await ws_connect(requester, f"/ws/chat/{workspace.pk}/")
    await communicator.send_to(text_data=chat_message("x", temperature="7", max_tokens="0"))
    frames = await receive_until(communicator, lambda f: 'id="chat-notice"' in f)
    assert "Temperature: Ensure this value is less than or equal to 2." in frames[-1]
    assert "Max tokens: Ensure this value is greater than or equal to 1." in frames[-1]
    await communicator.send_to(text_data=chat_message("x", conversation="999999"))
    frames = await receive_until(communicator, lambda f: 'id="chat-notice"' in f)
    assert "not yours or is gone" in frames[-1]
    await communicator.disconnect()


@pytest.mark.parametrize(
    ("who", "origin", "code"),
    [
        ("anonymous", ORIGIN, 4401),
        ("outsider", ORIGIN, 4404),  # another team's workspace: the same answer as a missing one
        ("requester", None, None),  # no Origin header: refused before any consumer runs
        ("requester", (b"origin", b"http://evil.example"), None),  # another site's page
    ],
)
async def test_the_socket_refuses_whoever_may_not_chat(standin, workspace, outsider, requester, who, origin, code):
    user = {"anonymous": None, "outsider": outsider, "requester": requester}[who]
    _, connected, closed_with = await ws_connect(user, f"/ws/chat/{workspace.pk}/", origin=origin)
    assert not connected
    if code is not None:
        assert closed_with == code
    assert standin.stats()["requests_total"] == 0


async def test_the_socket_refuses_workspaces_that_are_not_ready_or_not_inference(standin, team, requester, preset):
    provisioning = await sync_to_async(make_workspace)(
        team, requester, preset, name="later", status=Status.PROVISIONING
    )
    tuning = await sync_to_async(make_workspace)(
        team, requester, preset, name="tune", kind="tuning", status=Status.RUNNING
    )
    for obj in (provisioning, tuning):
        _, connected, code = await ws_connect(requester, f"/ws/chat/{obj.pk}/")
        assert (connected, code) == (False, 4409)
    _, connected, code = await ws_connect(requester, "/ws/chat/999999/")
    assert (connected, code) == (False, 4404)


async def test_admins_may_chat_with_any_team(standin, workspace, admin_user):
    communicator, connected, _ = await ws_connect(admin_user, f"/ws/chat/{workspace.pk}/")
    assert connected
    await ask(communicator, "admin here")
    await communicator.disconnect()


async def test_access_is_checked_again_on_every_send(standin, workspace, requester):
    communicator, _, _ = await ws_connect(requester, f"/ws/chat/{workspace.pk}/")
    await communicator.receive_from(timeout=5)  # the model picker
    await WorkspaceRequest.objects.filter(pk=workspace.pk).aupdate(status=Status.DELETING)
    await communicator.send_to(text_data=chat_message("still there?"))
    notice = await communicator.receive_from(timeout=5)
    assert "The workspace is deleting; there is no model to chat with any more." in notice
    assert (await communicator.receive_output(timeout=5))["type"] == "websocket.close"
    assert standin.stats()["requests"].get("POST /v1/chat/completions") is None
