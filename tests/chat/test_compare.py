"""Compare: one prompt to two models (base versus adapter, or two workspaces), both streaming at the same time."""

import html
import json
import re

import pytest
from asgiref.sync import sync_to_async

from tests.chat.fixtures import ADAPTER, BASE, make_workspace, receive_until, wait_closed, ws_connect
from workspaces.models import Status

pytestmark = pytest.mark.django_db(transaction=True)
CHUNK = re.compile(r'^<span hx-swap-oob="beforeend:#reply-([ab])-(\w+)">(.*)</span>$', re.S)


def compare_message(prompt, model=BASE, model_b=ADAPTER, **extra):
    data = {"prompt": prompt, "model": model, "model_b": model_b, "system_prompt": "", "temperature": "0",
            "top_p": "1", "max_tokens": "256", "action": "send", "HEADERS": {}}  # fmt: skip
    return json.dumps({**data, **extra})


def is_done(frame):
    return (
        'id="compare-controls" hx-swap-oob="true"' in frame
        and "Send to both" in frame
        and "disabled" not in frame.split('id="send"')[1][:20]
    )


async def test_base_and_adapter_stream_at_the_same_time(standin, workspace, requester):
    standin.token_delay = 0.02
    communicator, connected, _ = await ws_connect(
        requester, f"/ws/compare/{workspace.pk}/{workspace.pk}/?model_b={ADAPTER}"
    )
    assert connected
    pickers = [await communicator.receive_from(timeout=5) for _ in range(2)]
    assert any('id="model-status-a"' in p for p in pickers) and any(
        f'<option value="{ADAPTER}" selected>' in p for p in pickers
    )
    await communicator.send_to(text_data=compare_message("same prompt"))
    frames = await receive_until(communicator, is_done)
    order = [CHUNK.match(f).group(1) for f in frames if CHUNK.match(f)]
    first_b, last_a = order.index("b"), len(order) - 1 - order[::-1].index("a")
    assert first_b < last_a  # interleaved: both answers were streaming at once, not one after the other
    text = {
        side: "".join(html.unescape(m.group(3)) for f in frames if (m := CHUNK.match(f)) and m.group(1) == side)
        for side in "ab"
    }
    assert text == {"a": standin.answer(BASE, "same prompt"), "b": standin.answer(ADAPTER, "same prompt")}
    finals = [f for f in frames if f.startswith('<article class="msg msg-assistant" id="answer-')]
    assert len(finals) == 2 and all('class="markdown"' in f for f in finals)
    # The stand-in counts a stream once its last bytes are out, a moment after the portal may have them.
    stats = await wait_closed(standin)
    assert stats["streams_completed"] == 2
    await communicator.disconnect()


async def test_two_workspaces_and_stop_stops_both(standin, team, workspace, requester, preset):
    other = await sync_to_async(make_workspace)(team, requester, preset, name="phi-tuned")
    standin.token_delay = 0.05
    communicator, connected, _ = await ws_connect(requester, f"/ws/compare/{workspace.pk}/{other.pk}/")
    assert connected
    await communicator.send_to(text_data=compare_message("stop us", model_b=BASE))
    await receive_until(communicator, lambda f: bool(CHUNK.match(f)))
    await communicator.send_to(text_data=json.dumps({"action": "stop"}))
    frames = await receive_until(communicator, is_done)
    finals = [html.unescape(f) for f in frames if f.startswith("<article")]
    assert len(finals) == 2 and all("Stopped before the answer was complete." in f for f in finals)
    stats = await wait_closed(standin)
    assert stats["streams_disconnected"] == 2
    await communicator.disconnect()


async def test_compare_needs_both_workspaces_to_be_allowed_and_ready(
    standin, workspace, requester, outsider, other_team, preset
):
    foreign = await sync_to_async(make_workspace)(other_team, outsider, preset, name="theirs")
    _, connected, code = await ws_connect(requester, f"/ws/compare/{workspace.pk}/{foreign.pk}/")
    assert (connected, code) == (False, 4404)
    pending = await sync_to_async(make_workspace)(
        workspace.team, requester, preset, name="soon", status=Status.APPROVED
    )
    _, connected, code = await ws_connect(requester, f"/ws/compare/{workspace.pk}/{pending.pk}/")
    assert (connected, code) == (False, 4409)


async def test_compare_counts_two_requests_against_the_rate_limit(standin, settings, workspace, requester):
    settings.CHAT_RATE_PER_MINUTE = 3
    communicator, _, _ = await ws_connect(requester, f"/ws/compare/{workspace.pk}/{workspace.pk}/")
    await communicator.send_to(text_data=compare_message("one"))
    await receive_until(communicator, is_done)
    await communicator.send_to(text_data=compare_message("two"))
    frames = await receive_until(communicator, lambda f: 'id="chat-notice"' in f and "Too many" in f)
    assert "at most 3 a minute" in frames[-1]
    await communicator.disconnect()
