"""Chat services: endpoint resolution without a cluster, the shared rate limit, turns and how they end."""

import pytest
from django.core.cache import cache

from tests.chat.fixtures import BASE
from workspaces.chat import ChatError, Finished, Usage
from workspaces.models import Message
from workspaces.services import chat_access, conversations
from workspaces.services.chat_access import RateLimited
from workspaces.services.clusters import set_cluster
from workspaces.services.conversations import ChatSettings

pytestmark = pytest.mark.django_db
SETTINGS = ChatSettings(model=BASE, system_prompt="", temperature=0.7, top_p=1.0, max_tokens=64)


def test_the_development_override_needs_no_cluster(settings, workspace):
    settings.KAITO_INFERENCE_URL = "http://{name}.{namespace}.models.example:8080"
    settings.KUBECONFIG, settings.AKS_SUBSCRIPTION_ID = "", ""
    settings.CHAT_READ_TIMEOUT, settings.CHAT_CONNECT_TIMEOUT = 42, 3
    endpoint = chat_access.chat_endpoint(request=workspace)
    assert endpoint.base_url == "http://phi-chat.team-ml.models.example:8080"
    assert (endpoint.read_timeout, endpoint.connect_timeout) == (42, 3)


def test_without_override_or_cluster_the_user_is_told(settings, workspace, monkeypatch):
    settings.KAITO_INFERENCE_URL, settings.KUBECONFIG, settings.AKS_SUBSCRIPTION_ID = "", "", ""
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    set_cluster(None)
    try:
        with pytest.raises(ChatError) as info:
            chat_access.chat_endpoint(request=workspace)
    finally:
        set_cluster(None)
    assert info.value.kind == "unreachable"
    assert info.value.message == (
        "The portal cannot reach the cluster to find the model: No cluster is configured: set KUBECONFIG, or the AKS_* settings."
    )


def test_rate_limit_per_user_and_minute(settings, requester, outsider):
    settings.CHAT_RATE_PER_MINUTE = 3
    for _ in range(3):
        chat_access.chat_rate_take(user_id=requester.pk)
    with pytest.raises(RateLimited) as info:
        chat_access.chat_rate_take(user_id=requester.pk)
    assert 1 <= info.value.retry_after <= 60
    chat_access.chat_rate_take(user_id=outsider.pk)  # everyone has their own budget
    with pytest.raises(RateLimited):
        chat_access.chat_rate_take(user_id=outsider.pk, cost=3)
    settings.CHAT_RATE_PER_MINUTE = 0
    cache.clear()
    for _ in range(100):
        chat_access.chat_rate_take(user_id=requester.pk)  # 0 turns the limit off


def test_turns_build_alternating_history_and_end_honestly(workspace, requester):
    first = conversations.turn_start(
        user=requester, request=workspace, conversation_id=None, settings=SETTINGS, prompt="  one  "
    )
    assert first.created and first.conversation.title == "one" and first.reply.incomplete
    assert first.history == [{"role": "user", "content": "one"}]
    failed = conversations.reply_finish(
        reply_id=first.reply.pk, text="", error=ChatError("rate_limited", "busy", status=429)
    )
    assert (failed.incomplete, failed.error_kind, failed.error_message) == (True, "rate_limited", "busy")

    second = conversations.turn_start(user=requester, request=workspace, conversation_id=first.conversation.pk,
                                      settings=SETTINGS, prompt="two")  # fmt: skip
    assert second.history == [{"role": "user", "content": "two"}]  # the failed turn is left out: roles alternate
    done = conversations.reply_finish(reply_id=second.reply.pk, text="answer two",
                                      finished=Finished("length", Usage(3, 64, 67), streamed=True))  # fmt: skip
    assert (done.incomplete, done.finish_reason, done.usage["total_tokens"]) == (False, "length", 67)

    third = conversations.turn_start(user=requester, request=workspace, conversation_id=first.conversation.pk,
                                     settings=ChatSettings(model=BASE, system_prompt="Be kind."), prompt="three")  # fmt: skip
    assert third.history == [
        {"role": "system", "content": "Be kind."},
        {"role": "user", "content": "two"},
        {"role": "assistant", "content": "answer two"},
        {"role": "user", "content": "three"},
    ]
    cut = conversations.reply_finish(reply_id=third.reply.pk, text="partial")
    assert cut.incomplete and cut.error_kind == "interrupted"  # no Finished event: never complete
    stopped = conversations.reply_finish(reply_id=third.reply.pk, text="partial", stopped=True)
    assert stopped.error_kind == "stopped"


def test_a_long_first_prompt_makes_a_short_title(workspace, requester):
    turn = conversations.turn_start(
        user=requester, request=workspace, conversation_id=None, settings=SETTINGS, prompt="word " * 40
    )
    assert len(turn.conversation.title) == conversations.TITLE_LENGTH and turn.conversation.title.endswith("…")
    with pytest.raises(Exception, match="Type a message first"):
        conversations.turn_start(
            user=requester, request=workspace, conversation_id=None, settings=SETTINGS, prompt="  "
        )
    assert Message.objects.count() == 2
