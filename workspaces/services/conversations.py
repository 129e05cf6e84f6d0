"""Chat history writes: conversations per user and workspace, their turns, honest endings, JSON export."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from workspaces.chat import ChatError, Finished
from workspaces.models import Conversation, Message, WorkspaceRequest

EXPORT_FORMAT = "kaito-portal.conversation/v1"
TITLE_LENGTH = 60
STOPPED = "stopped"  # error_kind of an answer the user stopped; the others are workspaces.chat.ErrorKind
INTERRUPTED_MESSAGE = "The answer was interrupted (the portal restarted or the page went away); it is incomplete."


@dataclass(frozen=True)
class ChatSettings:
    model: str
    system_prompt: str = ""
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None

    def parameters(self) -> dict[str, Any]:
        return {"temperature": self.temperature, "top_p": self.top_p, "max_tokens": self.max_tokens}


@dataclass(frozen=True)
class Turn:
    """A question just stored, with the empty answer that is about to stream in."""

    conversation: Conversation
    created: bool  # the conversation began with this turn
    question: Message
    reply: Message
    history: list[dict[str, str]]  # what goes to the model: system prompt, earlier turns, the question


def conversations_of(*, user: AbstractBaseUser, request: WorkspaceRequest) -> QuerySet[Conversation]:
    return Conversation.objects.filter(user=user, request=request)


def conversation_get(*, user: AbstractBaseUser, request: WorkspaceRequest, conversation_id: int) -> Conversation:
    """The user's own conversation with this workspace; Conversation.DoesNotExist for anyone else's."""
    return Conversation.objects.get(pk=conversation_id, user=user, request=request)


def settings_of(conversation: Conversation) -> ChatSettings:
    params = conversation.parameters or {}
    return ChatSettings(
        model=conversation.model,
        system_prompt=conversation.system_prompt,
        temperature=params.get("temperature"),
        top_p=params.get("top_p"),
        max_tokens=params.get("max_tokens"),
    )


def _title_from(prompt: str) -> str:
    words = " ".join(prompt.split())
    return words if len(words) <= TITLE_LENGTH else words[: TITLE_LENGTH - 1].rstrip() + "…"


def conversation_create(
    *, user: AbstractBaseUser, request: WorkspaceRequest, settings: ChatSettings, title: str = ""
) -> Conversation:
    return Conversation.objects.create(
        user=user,
        request=request,
        title=title.strip()[:200],
        model=settings.model,
        system_prompt=settings.system_prompt,
        parameters=settings.parameters(),
    )


def conversation_rename(*, conversation: Conversation, title: str) -> Conversation:
    title = " ".join(title.split())
    if not title:
        raise ValidationError({"title": ["Give the conversation a title."]})
    conversation.title = title[:200]
    conversation.save(update_fields=["title", "updated_at"])
    return conversation


def conversation_delete(*, conversation: Conversation) -> None:
    conversation.delete()


def message_append(
    *, conversation: Conversation, role: str, content: str = "", model: str = "", incomplete: bool = False
) -> Message:
    return Message.objects.create(
        conversation=conversation, role=role, content=content, model=model, incomplete=incomplete
    )


def _history(conversation: Conversation, system_prompt: str) -> list[dict[str, str]]:
    """Earlier turns the model should see. A question whose answer failed with nothing is left out with
    that answer, so that user and assistant turns still alternate (some chat templates insist)."""
    history = [{"role": "system", "content": system_prompt}] if system_prompt else []
    pending: Message | None = None
    for message in conversation.messages.all():
        if message.role == Message.Role.USER:
            pending = message
        elif pending is not None and message.content:
            history += [{"role": "user", "content": pending.content}, {"role": "assistant", "content": message.content}]
            pending = None
    return history


@transaction.atomic
def turn_start(
    *,
    user: AbstractBaseUser,
    request: WorkspaceRequest,
    conversation_id: int | None,
    settings: ChatSettings,
    prompt: str,
) -> Turn:
    """Store the question and an empty answer marked incomplete (until it ends), in a new or existing conversation."""
    prompt = prompt.strip()
    if not prompt:
        raise ValidationError({"prompt": ["Type a message first."]})
    created = conversation_id is None
    if created:
        conversation = conversation_create(user=user, request=request, settings=settings, title=_title_from(prompt))
    else:
        conversation = Conversation.objects.select_for_update().get(pk=conversation_id, user=user, request=request)
        conversation.model, conversation.system_prompt = settings.model, settings.system_prompt
        conversation.parameters = settings.parameters()
        conversation.save(update_fields=["model", "system_prompt", "parameters", "updated_at"])
    history = [*_history(conversation, settings.system_prompt), {"role": "user", "content": prompt}]
    question = message_append(conversation=conversation, role=Message.Role.USER, content=prompt)
    reply = message_append(
        conversation=conversation, role=Message.Role.ASSISTANT, model=settings.model, incomplete=True
    )
    return Turn(conversation, created, question, reply, history)


def reply_finish(
    *,
    reply_id: int,
    text: str,
    reasoning: str = "",
    finished: Finished | None = None,
    error: ChatError | None = None,
    stopped: bool = False,
) -> Message:
    """Store how an answer ended: complete only with a Finished event and neither an error nor a stop."""
    reply = Message.objects.get(pk=reply_id)
    reply.content, reply.reasoning = text, reasoning
    reply.incomplete = finished is None or error is not None or stopped
    if finished is not None:
        reply.finish_reason = finished.finish_reason or ""
        reply.usage = dataclasses.asdict(finished.usage) if finished.usage else None
    if error is not None:
        reply.error_kind, reply.error_message = error.kind, error.message
    elif stopped:
        reply.error_kind, reply.error_message = STOPPED, "Stopped before the answer was complete."
    elif finished is None:
        reply.error_kind, reply.error_message = "interrupted", INTERRUPTED_MESSAGE
    reply.save()
    Conversation.objects.filter(pk=reply.conversation_id).update(updated_at=timezone.now())
    return reply


def conversation_export(*, conversation: Conversation) -> dict[str, Any]:
    """Everything about the conversation as JSON-ready data, failures and incomplete answers included."""
    request = conversation.request
    return {
        "format": EXPORT_FORMAT,
        "exported_at": timezone.now().isoformat(),
        "workspace": {"id": request.pk, "name": request.name, "namespace": request.namespace},
        "title": conversation.title,
        "model": conversation.model,
        "system_prompt": conversation.system_prompt,
        "parameters": conversation.parameters,
        "created_at": conversation.created_at.isoformat(),
        "updated_at": conversation.updated_at.isoformat(),
        "messages": [
            {
                "role": m.role,
                "content": m.content,
                "reasoning": m.reasoning or None,
                "model": m.model or None,
                "created_at": m.created_at.isoformat(),
                "finish_reason": m.finish_reason or None,
                "usage": m.usage,
                "incomplete": m.incomplete,
                "error": {"kind": m.error_kind, "message": m.error_message} if m.error_kind else None,
            }
            for m in conversation.messages.all()
        ],
    }
