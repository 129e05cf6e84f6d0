"""WebSocket consumers of the chat and compare pages: htmx ws-send forms in, HTML fragments with stable ids out."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.core.exceptions import ValidationError

from workspaces.chat_forms import PROMPT_MAX_CHARS, ChatForm, CompareForm
from workspaces.chat_streaming import Outcome, fragment, stream_reply
from workspaces.models import Conversation, WorkspaceRequest
from workspaces.services import chat_access, conversations
from workspaces.services.chat_access import ChatRefused, RateLimited

logger = logging.getLogger(__name__)
CHAT_TEMPLATE = "workspaces/chat.html"
COMPARE_TEMPLATE = "workspaces/chat_compare.html"
BUSY = "An answer is still streaming: wait for it or press Stop."


class _StreamingConsumer(AsyncWebsocketConsumer):
    """Access on connect and on every send (the same rule as the pages and the API), Stop, clean disconnect."""

    template = CHAT_TEMPLATE

    async def connect(self) -> None:
        self.user = self.scope["user"]
        self.task: asyncio.Task[None] | None = None
        self.streams: set[asyncio.Task[Outcome]] = set()  # cancellable while tokens flow, not while storing
        self.closed = False
        try:
            self.targets = [await self._target(pk) for pk in self.target_ids()]
        except ChatRefused as refused:
            await self.close(code=4000 + refused.status)  # before accept: the handshake is refused
            return
        await self.accept()
        # Detection takes a round trip to the model: the page is usable meanwhile, the picker fills in after.
        self.choices_task = asyncio.create_task(self._send_model_choices())

    def target_ids(self) -> list[int]:
        kwargs = self.scope["url_route"]["kwargs"]
        return [kwargs["pk"]]

    async def _target(self, pk: int) -> WorkspaceRequest:
        return await database_sync_to_async(chat_access.chat_target)(user=self.user, request_id=pk)

    async def disconnect(self, code: int) -> None:
        self.closed = True
        for stream in list(self.streams):
            stream.cancel()
        if self.task is not None:
            # Let the answer be stored as stopped before the consumer goes away.
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(self.task), timeout=10)

    async def send_html(self, html: str) -> None:
        if not self.closed:
            with contextlib.suppress(Exception):  # the socket may have gone in the meantime
                await self.send(text_data=html)

    async def notice(self, message: str, level: str = "bad") -> None:
        await self.send_html(fragment(self.template + "#notice", {"notice": message, "level": level, "oob": True}))

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        try:
            data = json.loads(text_data or "")
        except ValueError:
            return
        if not isinstance(data, dict):
            return
        data.pop("HEADERS", None)
        if data.get("action") == "stop":
            for stream in list(self.streams):
                stream.cancel()
            return
        if self.task is not None and not self.task.done():
            await self.notice(BUSY, "warn")
            return
        await self.start(data)

    async def start(self, data: dict[str, Any]) -> None:
        raise NotImplementedError

    def _admit(self, cost: int, then: Callable[[list[WorkspaceRequest]], Any] | None) -> Any:
        # One trip to a worker thread for all of it: under load every trip costs (bench/README.md).
        self.targets = [chat_access.chat_target(user=self.user, request_id=t.pk) for t in self.targets]
        chat_access.chat_rate_take(user_id=self.user.pk, cost=cost)
        return then(self.targets) if then else None

    async def admit(
        self, *, cost: int, then: Callable[[list[WorkspaceRequest]], Any] | None = None
    ) -> tuple[bool, Any]:
        """Still allowed (the same rule as on connect), within the rate limit, then `then(targets)`; or say why not."""
        try:
            return True, await database_sync_to_async(self._admit)(cost, then)
        except ChatRefused as refused:
            await self.notice(refused.message)
            await self.close(code=4000 + refused.status)
        except RateLimited as limited:
            await self.notice(limited.message)
        return False, None

    async def _stream(self, **kwargs: Any) -> Outcome:
        stream = asyncio.create_task(stream_reply(send=self.send_html, **kwargs))
        self.streams.add(stream)
        try:
            return await asyncio.shield(stream)  # a cancelled consumer task must not interrupt storing
        except asyncio.CancelledError:
            if stream.cancelled():  # stopped before it even began
                return Outcome(stopped=True)
            raise
        finally:
            self.streams.discard(stream)

    async def _send_model_choices(self) -> None:
        raise NotImplementedError

    def preselected(self, key: str = "model") -> str:
        """The model the page showed when it opened the socket (?model=…), to keep it selected."""
        return parse_qs(self.scope.get("query_string", b"").decode()).get(key, [""])[0]


class ChatConsumer(_StreamingConsumer):
    """/ws/chat/<pk>/: one conversation; the answer streams into #reply-<message id>."""

    async def _send_model_choices(self) -> None:
        choices = await chat_access.model_choices(request=self.targets[0])
        context = {"choices": choices, "obj": self.targets[0], "selected": self.preselected(), "oob": True}
        await self.send_html(fragment(self.template + "#model-status", context))

    async def start(self, data: dict[str, Any]) -> None:
        form = ChatForm(data, models=[data.get("model") or ""])
        if not form.is_valid():
            await self.notice(form.error_text())
            return

        def begin(targets: list[WorkspaceRequest]) -> conversations.Turn:
            return conversations.turn_start(
                user=self.user,
                request=targets[0],
                conversation_id=form.cleaned_data.get("conversation"),
                settings=form.settings(),
                prompt=form.cleaned_data["prompt"],
            )

        try:
            admitted, turn = await self.admit(cost=1, then=begin)
        except (ValidationError, Conversation.DoesNotExist) as exc:
            await self.notice(" ".join(getattr(exc, "messages", [])) or "That conversation is not yours or is gone.")
            return
        if not admitted:
            return
        context = {"obj": self.targets[0], "turn": turn, "prompt_max": PROMPT_MAX_CHARS, "streaming": True, "oob": True}
        await self.send_html(fragment(self.template + "#turn-start", context))
        self.task = asyncio.create_task(self._answer(turn, form.settings()))

    async def _answer(self, turn: conversations.Turn, settings: conversations.ChatSettings) -> None:
        reply = turn.reply
        outcome = await self._stream(
            request=self.targets[0],
            settings=settings,
            messages=turn.history,
            reply_dom=f"reply-{reply.pk}",
            reasoning_dom=f"reasoning-{reply.pk}",
        )
        stored = await database_sync_to_async(conversations.reply_finish)(
            reply_id=reply.pk,
            text=outcome.text,
            reasoning=outcome.reasoning,
            finished=outcome.finished,
            error=outcome.error,
            stopped=outcome.stopped,
        )
        context = {"obj": self.targets[0], "m": stored, "oob": True, "streaming": False}
        await self.send_html(fragment(self.template + "#turn-end", context))


class CompareConsumer(_StreamingConsumer):
    """/ws/compare/<a>/<b>/: the same prompt to two models (of one or two workspaces), both streaming at once.

    Comparisons are not stored: they are experiments, and the page says so.
    """

    template = COMPARE_TEMPLATE

    def target_ids(self) -> list[int]:
        kwargs = self.scope["url_route"]["kwargs"]
        return [kwargs["a"], kwargs["b"]]

    async def _send_model_choices(self) -> None:
        both = await asyncio.gather(*(chat_access.model_choices(request=t) for t in self.targets))
        for side, (target, choices) in zip("ab", zip(self.targets, both, strict=True), strict=True):
            selected = self.preselected("model" if side == "a" else "model_b")
            context = {"choices": choices, "obj": target, "side": side, "selected": selected, "oob": True}
            await self.send_html(fragment(self.template + "#model-status", context))

    async def start(self, data: dict[str, Any]) -> None:
        form = CompareForm(data, models=[data.get("model") or ""])
        form.set_models_b([data.get("model_b") or ""])
        if not form.is_valid():
            await self.notice(form.error_text())
            return
        admitted, _ = await self.admit(cost=2)  # two answers from the model(s)
        if not admitted:
            return
        settings = form.settings()
        sides = [settings, dataclasses.replace(settings, model=form.cleaned_data["model_b"])]
        run = uuid.uuid4().hex[:10]  # unique across reconnects of this page: the ids must never repeat
        history = ([{"role": "system", "content": settings.system_prompt}] if settings.system_prompt else []) + [
            {"role": "user", "content": form.cleaned_data["prompt"]}
        ]
        context = {
            "run": run,
            "prompt": form.cleaned_data["prompt"],
            "sides": list(zip("ab", self.targets, sides, strict=True)),
            "prompt_max": PROMPT_MAX_CHARS,
            "oob": True,
        }
        await self.send_html(fragment(self.template + "#run-start", context))
        self.task = asyncio.create_task(self._answer_both(run, sides, history))

    async def _answer_both(self, run: str, sides: list[conversations.ChatSettings], history: list[dict]) -> None:
        async def one(side: str, target: WorkspaceRequest, settings: conversations.ChatSettings) -> None:
            dom = f"{side}-{run}"
            outcome = await self._stream(
                request=target,
                settings=settings,
                messages=history,
                reply_dom=f"reply-{dom}",
                reasoning_dom=f"reasoning-{dom}",
            )
            context = {"dom": dom, "settings": settings, "target": target, "outcome": outcome, "oob": True}
            await self.send_html(fragment(self.template + "#answer", context))

        await asyncio.gather(*(one(s, t, c) for s, t, c in zip("ab", self.targets, sides, strict=True)))
        await self.send_html(fragment(self.template + "#controls", {"streaming": False, "oob": True}))
