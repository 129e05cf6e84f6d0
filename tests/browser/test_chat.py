"""The chat in Chromium against Daphne: tokens appear while the model writes, Stop, inert output, a phone screen."""

import re
import time

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import BROWSER_ADAPTER
from tests.browser.fixtures import sign_in
from tests.chat.fixtures import BASE, make_workspace
from workspaces.models import Conversation, Message

pytestmark = pytest.mark.browser


@pytest.fixture
def chat(live_portal, new_page, team, requester, preset):
    """A signed-in page on the chat of a READY workspace, with the model picker filled in."""
    workspace = make_workspace(team, requester, preset)
    page = new_page()
    sign_in(page, live_portal, requester)
    page.goto(f"{live_portal.url}/workspaces/{workspace.pk}/chat/")
    expect(page.locator("#model-help")).to_contain_text("2 models")
    return page, workspace


def send(page, prompt):
    page.fill("#prompt", prompt)
    page.click("#send")


def test_tokens_appear_before_the_answer_is_complete(live_portal, chat):
    page, workspace = chat
    live_portal.standin.token_delay = 0.15
    send(page, "Explain KAITO in one paragraph")
    full = live_portal.standin.answer(BASE, "Explain KAITO in one paragraph")
    streaming = page.locator("#transcript article.msg.streaming")
    expect(streaming).to_have_count(1)
    reply = streaming.locator("div.msg-text[id^=reply-]")
    expect(reply).not_to_have_text("")
    first = reply.inner_text()
    time.sleep(0.6)
    second = reply.inner_text()
    # Partial text is visible while the stream-in-progress marker is still there, and it grows.
    assert streaming.count() == 1 and page.locator("#stop").is_enabled()
    assert 0 < len(first) < len(second) < len(full), (first, second)
    assert full.startswith(first.strip()) and full.startswith(second.strip())
    expect(streaming).to_have_count(0, timeout=15_000)
    final = page.locator("#transcript article.msg-assistant .markdown")
    expect(final).to_have_text(full)
    expect(page.locator("#send")).to_be_enabled()
    expect(page.locator("#prompt")).to_have_value("")
    conversation = Conversation.objects.get(request=workspace)
    expect(page.locator(f"#conversation-{conversation.pk}")).to_have_text("Explain KAITO in one paragraph")
    expect(page.locator("#export-conversation")).to_be_visible()
    message = Message.objects.get(role="assistant")
    assert message.content == full and not message.incomplete


def test_stop_closes_the_model_stream_and_marks_the_answer_incomplete(live_portal, chat):
    page, _ = chat
    live_portal.standin.token_delay = 0.2
    send(page, "A long story please")
    expect(page.locator("#transcript article.msg.streaming div.msg-text[id^=reply-]")).not_to_have_text("")
    page.click("#stop")
    error = page.locator("#transcript .msg-error")
    expect(error).to_contain_text("Incomplete answer. Stopped before the answer was complete.")
    expect(page.locator("#transcript .msg-partial")).to_contain_text("Text received before it ended (incomplete):")
    deadline = time.monotonic() + 5
    while live_portal.standin.stats()["open_streams"]:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert live_portal.standin.stats()["streams_disconnected"] == 1
    assert Message.objects.get(role="assistant").error_kind == "stopped"


XSS = (
    '<script>window.__pwned = 1</script> <img src=x onerror="window.__pwned = 2"> [click](javascript:window.__pwned=3) '
    '<a href="javascript:window.__pwned=4" id="evil">evil</a> <b onmouseover="window.__pwned=5">hover</b> '
    "**bold** [docs](https://example.com)"
)


def test_model_output_cannot_run_script_or_inject_html(live_portal, chat):
    page, _ = chat
    dialogs = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    send(page, XSS)
    final = page.locator("#transcript article.msg-assistant .markdown")
    expect(final).to_contain_text("<script>window.__pwned = 1</script>")  # shown as text
    expect(final.locator("strong")).to_have_text("bold")  # Markdown still works
    page.locator("#transcript b, #transcript strong").first.hover()
    found = page.evaluate(
        """() => {
            const t = document.getElementById('transcript');
            const handlers = [...t.querySelectorAll('*')].flatMap(e => [...e.attributes].map(a => a.name)).filter(n => n.startsWith('on'));
            return {pwned: window.__pwned ?? null, scripts: t.querySelectorAll('script, img, iframe, #evil').length,
                    handlers, hrefs: [...t.querySelectorAll('a')].map(a => a.getAttribute('href'))};
        }"""
    )
    assert found == {"pwned": None, "scripts": 0, "handlers": [], "hrefs": ["https://example.com"]}
    assert dialogs == []


def test_the_adapter_is_selectable_and_answers_as_itself(live_portal, chat):
    page, _ = chat
    page.select_option("#id_model", BROWSER_ADAPTER)
    send(page, "who are you")
    expect(page.locator("#transcript article.msg-assistant .markdown")).to_contain_text(f"[adapter {BROWSER_ADAPTER}]")
    assert Message.objects.get(role="assistant").model == BROWSER_ADAPTER


def test_compare_streams_both_sides(live_portal, new_page, team, requester, preset):
    workspace = make_workspace(team, requester, preset)
    page = new_page()
    sign_in(page, live_portal, requester)
    page.goto(f"{live_portal.url}/workspaces/{workspace.pk}/compare/")
    expect(page.locator("#model-status-b .help")).to_contain_text("2 models served")
    page.select_option("#id_model_b", BROWSER_ADAPTER)
    page.fill("#prompt", "same question")
    page.click("#send")
    answers = page.locator("#compare-runs article .markdown")
    expect(answers).to_have_count(2, timeout=15_000)
    expect(answers.nth(0)).to_have_text(live_portal.standin.answer(BASE, "same question"))
    expect(answers.nth(1)).to_have_text(live_portal.standin.answer(BROWSER_ADAPTER, "same question"))


@pytest.mark.parametrize("path", ["chat", "compare", "profile"])
def test_pages_fit_a_390px_phone(live_portal, new_page, team, requester, preset, path, tmp_path):
    workspace = make_workspace(team, requester, preset, name="a-rather-long-workspace-name-for-a-phone")
    conversation = Conversation.objects.create(user=requester, request=workspace, title="A long title " * 5, model=BASE)
    long_word = "x" * 200
    Message.objects.create(conversation=conversation, role="user", content=f"Please answer {long_word}")
    Message.objects.create(conversation=conversation, role="assistant", model=BASE, finish_reason="stop",
                           content=f"| a | b |\n|---|---|\n| {long_word} | 2 |\n\n```\n{long_word}\n```")  # fmt: skip
    page = new_page(width=390, height=844)
    sign_in(page, live_portal, requester)
    url = {"chat": f"/workspaces/{workspace.pk}/chat/?c={conversation.pk}", "compare": f"/workspaces/{workspace.pk}/compare/",
           "profile": "/accounts/profile/"}[path]  # fmt: skip
    page.goto(live_portal.url + url)
    page.wait_for_load_state("networkidle")
    page.screenshot(path=str(tmp_path / f"{path}-390.png"), full_page=True)
    width = page.evaluate("() => document.documentElement.scrollWidth")
    assert width <= 390, f"{path} is {width}px wide at a 390px viewport"
    if path == "chat":
        box = page.locator("#prompt").bounding_box()
        assert box and box["x"] >= 0 and box["x"] + box["width"] <= 390


def test_tokens_are_created_and_shown_once_in_the_browser(live_portal, new_page, requester):
    page = new_page()
    sign_in(page, live_portal, requester)
    page.goto(live_portal.url + "/workspaces/")
    page.click("#nav-profile")
    page.fill("#id_name", "notebook")
    page.click("#create-token")
    raw = page.locator("#new-token").input_value()
    assert re.fullmatch(r"kp_[A-Za-z0-9_-]{43}", raw)
    page.goto(live_portal.url + "/accounts/profile/")
    assert raw not in page.content()
    expect(page.locator("#token-rows")).to_contain_text("notebook")
