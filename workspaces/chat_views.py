"""Chat pages: chatting with a workspace's model, saved conversations (rename, delete, export), compare."""

from __future__ import annotations

import json

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import Http404, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_htmx.http import HttpResponseClientRedirect

from portal.http import HtmxHttpRequest, wants_fragment
from workspaces import services
from workspaces.chat import ModelInfo
from workspaces.chat_forms import PROMPT_MAX_CHARS, ChatForm, CompareForm, settings_initial
from workspaces.models import Conversation, Status, WorkspaceRequest
from workspaces.services import chat_access, conversations
from workspaces.services.chat_access import ChatRefused, ModelChoices

NEEDS_JAVASCRIPT = (
    "Sending messages needs JavaScript and a WebSocket: the answer streams in as it is written. The conversation "
    "list, export and deletion work without."
)


def _visible(request: HtmxHttpRequest, pk: int) -> WorkspaceRequest:
    """The workspace whatever its status (history stays reachable after it is gone); 404 for other teams'."""
    obj = get_object_or_404(WorkspaceRequest.objects.select_related("preset"), pk=pk)
    if not services.can_view(request.user, obj):
        raise Http404("No such workspace among your teams' workspaces.")
    return obj


def _conversation(request: HtmxHttpRequest, obj: WorkspaceRequest, cid: int) -> Conversation:
    try:
        return conversations.conversation_get(user=request.user, request=obj, conversation_id=cid)
    except Conversation.DoesNotExist:
        raise Http404("No such conversation of yours.") from None


def _refused(request: HtmxHttpRequest, pk: int, refused: ChatRefused) -> HttpResponse:
    obj = None
    if refused.status == 409:  # visible, just not chattable now: offer the saved history
        obj = WorkspaceRequest.objects.filter(pk=pk).first()
    saved = conversations.conversations_of(user=request.user, request=obj)[:100] if obj else []
    context = {"refused": refused, "obj": obj, "conversations": saved}
    return render(request, "workspaces/chat_refused.html", context, status=refused.status)


def _pending(model: str, obj: WorkspaceRequest) -> ModelChoices:
    """The picker before the WebSocket has asked the model server (it replaces this within a moment)."""
    return ModelChoices(obj.chat_protocol or None, (ModelInfo(id=model),))


def api_base(request: HtmxHttpRequest, obj: WorkspaceRequest) -> str:
    models_url = reverse("api-openai-models", args=[obj.pk])
    return request.build_absolute_uri(models_url.removesuffix("/models"))


@require_http_methods(["GET", "POST"])
def chat_page(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    try:
        obj = chat_access.chat_target(user=request.user, request_id=pk)
    except ChatRefused as refused:
        return _refused(request, pk, refused)
    if request.method == "POST":  # the chat form submitted without JavaScript
        messages.warning(request, NEEDS_JAVASCRIPT)
        return redirect("workspaces:chat", pk=pk)
    current = _conversation(request, obj, int(request.GET["c"])) if request.GET.get("c", "").isdigit() else None
    settings = conversations.settings_of(current) if current else None
    model = (settings.model if settings else "") or obj.preset.served_name
    initial = {**settings_initial(settings), "model": model, "conversation": current.pk if current else None}
    context = {
        "obj": obj,
        "conversations": conversations.conversations_of(user=request.user, request=obj)[:100],
        "conversation": current,
        "chat_messages": current.messages.all() if current else [],
        "form": ChatForm(initial=initial, models=[model]),
        "prompt_max": PROMPT_MAX_CHARS,
        "choices": _pending(model, obj),
        "selected": model,
        "pending": True,
        "api_base": api_base(request, obj),
        "snippet_model": model,
    }
    return render(request, "workspaces/chat.html", context)


@require_GET
def conversation_export(request: HtmxHttpRequest, pk: int, cid: int) -> HttpResponse:
    conversation = _conversation(request, _visible(request, pk), cid)
    data = conversations.conversation_export(conversation=conversation)
    response = HttpResponse(json.dumps(data, indent=2, ensure_ascii=False), content_type="application/json")
    response["Content-Disposition"] = f'attachment; filename="conversation-{conversation.pk}.json"'
    return response


@require_POST
def conversation_rename(request: HtmxHttpRequest, pk: int, cid: int) -> HttpResponse:
    obj = _visible(request, pk)
    conversation = _conversation(request, obj, cid)
    error = ""
    try:
        conversation = conversations.conversation_rename(conversation=conversation, title=request.POST.get("title", ""))
    except ValidationError as exc:
        error = " ".join(exc.messages)
    if wants_fragment(request):
        context = {"obj": obj, "conversation": conversation, "rename_error": error, "oob": True}
        return render(request, "workspaces/chat.html#conversation-renamed", context)
    if error:
        messages.error(request, error)
    return redirect(reverse("workspaces:chat", args=[pk]) + f"?c={conversation.pk}")


@require_POST
def conversation_delete(request: HtmxHttpRequest, pk: int, cid: int) -> HttpResponse:
    obj = _visible(request, pk)
    conversation = _conversation(request, obj, cid)
    title = str(conversation)
    conversations.conversation_delete(conversation=conversation)
    messages.success(request, f"Deleted the conversation “{title}”.")
    destination = reverse("workspaces:chat", args=[pk])
    if obj.status != Status.READY:
        destination = obj.get_absolute_url()
    return HttpResponseClientRedirect(destination) if request.htmx else redirect(destination)


@require_GET
def compare_page(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    try:
        left = chat_access.chat_target(user=request.user, request_id=pk)
        other = request.GET.get("with", "")
        right = chat_access.chat_target(user=request.user, request_id=int(other)) if other.isdigit() else left
    except ChatRefused as refused:
        return _refused(request, pk, refused)
    candidates = (
        WorkspaceRequest.objects.visible_to(request.user)
        .filter(kind=WorkspaceRequest.Kind.INFERENCE, status=Status.READY)
        .select_related("preset")
        .order_by("name", "pk")
    )
    model_a = request.GET.get("model") or left.preset.served_name
    model_b = request.GET.get("model_b") or right.preset.served_name
    form = CompareForm(initial={"model": model_a, "model_b": model_b}, models=[model_a])
    form.set_models_b([model_b])
    context = {
        "obj": left,
        "right": right,
        "candidates": candidates,
        "form": form,
        "prompt_max": PROMPT_MAX_CHARS,
        "sides": [("a", left, _pending(model_a, left), model_a), ("b", right, _pending(model_b, right), model_b)],
        "pending": True,
    }
    return render(request, "workspaces/chat_compare.html", context)
