"""Chat pages without JavaScript: who may open them, saved conversations (list, rename, delete, export), compare."""

import json
import logging

import pytest

from portal.models import ApiToken
from tests.chat.fixtures import BASE, make_workspace
from workspaces.models import Conversation, Message, Status
from workspaces.services import conversations
from workspaces.services.conversations import ChatSettings

pytestmark = pytest.mark.django_db


def conversation_with_messages(user, workspace, title="Earlier talk"):
    settings = ChatSettings(model=BASE, system_prompt="Be brief.", temperature=0.2, top_p=0.9, max_tokens=64)
    conversation = conversations.conversation_create(user=user, request=workspace, settings=settings, title=title)
    Message.objects.create(conversation=conversation, role="user", content="What is <b>KAITO</b>?")
    Message.objects.create(conversation=conversation, role="assistant", content="**Kubernetes** AI toolchain.", model=BASE,
                           finish_reason="stop", usage={"prompt_tokens": 4, "completion_tokens": 3, "total_tokens": 7})  # fmt: skip
    Message.objects.create(conversation=conversation, role="user", content="And then?")
    Message.objects.create(conversation=conversation, role="assistant", content="It was cut", model=BASE, incomplete=True,
                           error_kind="stream_cut", error_message="The model server closed the connection mid-answer.")  # fmt: skip
    return conversation


def test_the_chat_page_for_a_team_member(client, workspace, requester):
    client.force_login(requester)
    page = client.get(f"/workspaces/{workspace.pk}/chat/")
    assert page.status_code == 200
    text = page.content.decode()
    assert f'ws-connect="/ws/chat/{workspace.pk}/?model={BASE}"' in text and "ws-send" in text
    assert "<noscript>" in text and "Sending messages needs JavaScript" in text
    assert 'id="transcript"' in text and 'id="conversation-list"' in text and 'id="chat-controls"' in text
    base = f"http://testserver/api/workspaces/{workspace.pk}/v1"
    assert f"curl -N {base}/chat/completions" in text and f'OpenAI(base_url="{base}", api_key="kp_...")' in text
    assert "Authorization: Bearer $KAITO_PORTAL_TOKEN" in text and f'"model": "{BASE}"' in text.replace("&quot;", '"')


def test_the_detail_page_offers_chat_only_when_ready(client, team, workspace, requester, preset):
    client.force_login(requester)
    assert 'id="open-chat"' in client.get(f"/workspaces/{workspace.pk}/").content.decode()
    later = make_workspace(team, requester, preset, name="later", status=Status.PROVISIONING)
    assert 'id="open-chat"' not in client.get(f"/workspaces/{later.pk}/").content.decode()


@pytest.mark.parametrize(
    ("status", "kind", "code", "words"),
    [
        (
            Status.PROVISIONING,
            "inference",
            409,
            "The workspace is provisioning; chat opens when it is ready. Now: Waiting for a GPU node.",
        ),
        (Status.PENDING_APPROVAL, "inference", 409, "waiting for approval"),
        (Status.DELETED, "inference", 409, "The workspace is deleted; there is no model to chat with any more."),
        (Status.RUNNING, "tuning", 409, "fine-tuning workspace"),
    ],
)
def test_not_ready_workspaces_explain_why(client, team, requester, preset, status, kind, code, words):
    obj = make_workspace(team, requester, preset, name="w", status=status, kind=kind)
    client.force_login(requester)
    for url in (f"/workspaces/{obj.pk}/chat/", f"/workspaces/{obj.pk}/compare/"):
        response = client.get(url)
        assert response.status_code == code and words in response.content.decode()


def test_other_teams_and_strangers_are_refused(client, workspace, outsider, admin_user):
    response = client.get(f"/workspaces/{workspace.pk}/chat/")
    assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")
    client.force_login(outsider)
    refused = client.get(f"/workspaces/{workspace.pk}/chat/")
    assert refused.status_code == 404 and "No such workspace among your teams" in refused.content.decode()
    client.force_login(admin_user)
    assert client.get(f"/workspaces/{workspace.pk}/chat/").status_code == 200


def test_saved_conversations_without_javascript(client, workspace, requester):
    conversation = conversation_with_messages(requester, workspace)
    client.force_login(requester)
    listing = client.get(f"/workspaces/{workspace.pk}/chat/").content.decode()
    assert (
        f'<li id="conversation-{conversation.pk}"><a href="/workspaces/{workspace.pk}/chat/?c={conversation.pk}">Earlier talk</a></li>'
        in listing
    )
    page = client.get(f"/workspaces/{workspace.pk}/chat/?c={conversation.pk}").content.decode()
    assert "What is &lt;b&gt;KAITO&lt;/b&gt;?" in page  # the user's text, escaped
    assert "<strong>Kubernetes</strong> AI toolchain." in page  # the answer, as Markdown
    assert "Incomplete answer." in page and "Text received before it ended (incomplete):" in page
    assert f'<input type="hidden" name="conversation" value="{conversation.pk}" id="conversation-id">' in page
    assert ">\nBe brief.</textarea>" in page and 'value="0.2"' in page and 'value="64"' in page
    assert 'id="export-conversation"' in page and 'id="delete-conversation"' in page


def test_export_rename_delete(client, workspace, requester):
    conversation = conversation_with_messages(requester, workspace)
    client.force_login(requester)
    exported = client.get(f"/workspaces/{workspace.pk}/chat/{conversation.pk}/export.json")
    assert exported["Content-Disposition"] == f'attachment; filename="conversation-{conversation.pk}.json"'
    data = json.loads(exported.content)
    assert data["format"] == "kaito-portal.conversation/v1" and data["model"] == BASE
    assert data["parameters"] == {"temperature": 0.2, "top_p": 0.9, "max_tokens": 64}
    assert [m["role"] for m in data["messages"]] == ["user", "assistant", "user", "assistant"]
    assert data["messages"][1]["usage"]["total_tokens"] == 7 and data["messages"][1]["incomplete"] is False
    assert data["messages"][3]["incomplete"] is True and data["messages"][3]["error"]["kind"] == "stream_cut"

    renamed = client.post(f"/workspaces/{workspace.pk}/chat/{conversation.pk}/rename/", {"title": "  New   name "})
    assert renamed.status_code == 302 and renamed["Location"].endswith(f"?c={conversation.pk}")
    assert Conversation.objects.get(pk=conversation.pk).title == "New name"
    fragment = client.post(
        f"/workspaces/{workspace.pk}/chat/{conversation.pk}/rename/",
        {"title": "Via htmx"},
        headers={"HX-Request": "true"},
    )
    text = fragment.content.decode()
    assert text.lstrip().startswith('<div class="page-head conversation-head" id="conversation-head">')
    assert f'<li id="conversation-{conversation.pk}" hx-swap-oob="true">' in text and "Via htmx" in text
    empty = client.post(
        f"/workspaces/{workspace.pk}/chat/{conversation.pk}/rename/", {"title": " "}, headers={"HX-Request": "true"}
    )
    assert "Give the conversation a title." in empty.content.decode()

    deleted = client.post(f"/workspaces/{workspace.pk}/chat/{conversation.pk}/delete/")
    assert deleted.status_code == 302 and not Conversation.objects.filter(pk=conversation.pk).exists()
    assert not Message.objects.filter(conversation_id=conversation.pk).exists()


def test_nobody_reaches_another_users_conversation(client, team, workspace, requester, approver, outsider):
    conversation = conversation_with_messages(requester, workspace)
    for user, code in ((approver, 404), (outsider, 404)):  # a teammate does not see it either
        client.force_login(user)
        assert client.get(f"/workspaces/{workspace.pk}/chat/?c={conversation.pk}").status_code == code
        assert client.get(f"/workspaces/{workspace.pk}/chat/{conversation.pk}/export.json").status_code == code
        assert client.post(f"/workspaces/{workspace.pk}/chat/{conversation.pk}/delete/").status_code == code
        assert (
            client.post(f"/workspaces/{workspace.pk}/chat/{conversation.pk}/rename/", {"title": "x"}).status_code
            == code
        )
    assert Conversation.objects.get(pk=conversation.pk).title == "Earlier talk"


def test_history_stays_exportable_after_the_workspace_is_gone(client, workspace, requester):
    conversation = conversation_with_messages(requester, workspace)
    workspace.status = Status.EXPIRED
    workspace.save()
    client.force_login(requester)
    refused = client.get(f"/workspaces/{workspace.pk}/chat/")
    assert refused.status_code == 409 and f"/chat/{conversation.pk}/export.json" in refused.content.decode()
    assert client.get(f"/workspaces/{workspace.pk}/chat/{conversation.pk}/export.json").status_code == 200


def test_posting_the_chat_form_without_javascript_says_what_is_needed(client, workspace, requester):
    client.force_login(requester)
    response = client.post(f"/workspaces/{workspace.pk}/chat/", {"prompt": "hi"}, follow=True)
    assert "Sending messages needs JavaScript and a WebSocket" in response.content.decode()
    assert not Message.objects.exists()


def test_compare_page_offers_ready_workspaces_of_the_users_teams(
    client, team, other_team, workspace, requester, outsider, preset
):
    mine = make_workspace(team, requester, preset, name="phi-tuned")
    theirs = make_workspace(other_team, outsider, preset, name="theirs")
    client.force_login(requester)
    page = client.get(f"/workspaces/{workspace.pk}/compare/?with={mine.pk}").content.decode()
    assert f'ws-connect="/ws/compare/{workspace.pk}/{mine.pk}/' in page
    assert f'<option value="{mine.pk}" selected>' in page and "theirs" not in page
    assert client.get(f"/workspaces/{workspace.pk}/compare/?with={theirs.pk}").status_code == 404


def test_profile_lists_creates_once_and_revokes_tokens(client, requester, caplog):
    caplog.set_level(logging.DEBUG)
    client.force_login(requester)
    page = client.get("/accounts/profile/").content.decode()
    assert 'id="nav-profile"' in page and 'href="/accounts/profile/"' in page and "No tokens yet." in page
    created = client.post("/accounts/profile/tokens/", {"name": "notebook"})
    text = created.content.decode()
    token = ApiToken.objects.get(user=requester)
    raw = text.split('id="new-token" value="')[1].split('"')[0]
    assert raw.startswith("kp_") and raw.startswith(token.prefix) and "shown only this once" in text
    assert "no-store" in created["Cache-Control"]
    again = client.get("/accounts/profile/").content.decode()
    assert raw not in again and f"{token.prefix}…" in again and "notebook" in again and "never" in again
    api = client.get("/api/workspaces/", headers={"Authorization": f"Bearer {raw}"})
    assert api.status_code == 200
    revoked = client.post(f"/accounts/profile/tokens/{token.pk}/revoke/", follow=True).content.decode()
    assert "Revoked the token “notebook”" in revoked and "revoked " in revoked
    assert client.get("/api/workspaces/", headers={"Authorization": f"Bearer {raw}"}).status_code == 401
    assert all(raw not in record.getMessage() and raw not in str(record.__dict__) for record in caplog.records)


def test_tokens_are_personal_and_need_a_name(client, requester, outsider):
    client.force_login(requester)
    assert "This field is required." in client.post("/accounts/profile/tokens/", {"name": ""}).content.decode()
    client.force_login(outsider)
    client.post("/accounts/profile/tokens/", {"name": "mine"})
    theirs = ApiToken.objects.get(user=outsider)
    client.force_login(requester)
    assert client.post(f"/accounts/profile/tokens/{theirs.pk}/revoke/").status_code == 404
    assert ApiToken.objects.get(pk=theirs.pk).revoked_at is None
