"""One answer from a workspace's model, streamed to a WebSocket as HTML fragments; says how it ended."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any

from django.template.loader import render_to_string
from django.utils.html import escape

from portal import metrics
from workspaces.chat import ChatError, ChatEvent, Finished, ReasoningDelta, TextDelta, stream_chat
from workspaces.models import WorkspaceRequest
from workspaces.services.chat_access import achat_endpoint, chat_protocol, protocol_forget, shared_client
from workspaces.services.conversations import ChatSettings

Send = Callable[[str], Awaitable[None]]


@dataclass
class Outcome:
    text: str = ""
    reasoning: str = ""
    finished: Finished | None = None
    error: ChatError | None = None
    stopped: bool = False
    parts: list[str] = field(default_factory=list, repr=False)


def chunk(dom_id: str, text: str) -> str:
    """Append escaped text to the element with this id (htmx ws: each top-level element is an oob swap).

    Hand-formatted rather than a template: it runs once per token for every open stream.
    """
    return f'<span hx-swap-oob="beforeend:#{dom_id}">{escape(text)}</span>'


def fragment(template: str, context: Mapping[str, Any]) -> str:
    return render_to_string(template, dict(context)).strip()


_END = object()  # the pump's last item: the event stream is over (its task holds the outcome)


async def _pump(events: AsyncIterator[ChatEvent], queue: asyncio.Queue[object]) -> None:
    """Read the model's events into the queue; closing the stream (end, error, cancel) closes the upstream."""
    try:
        async with aclosing(events) as stream:
            async for event in stream:
                queue.put_nowait(event)
    finally:
        queue.put_nowait(_END)


async def stream_reply(
    *,
    request: WorkspaceRequest,
    settings: ChatSettings,
    messages: Sequence[Mapping[str, str]],
    reply_dom: str,
    reasoning_dom: str,
    send: Send,
) -> Outcome:
    """Stream the answer into #reply_dom (escaped text) and #reasoning_dom; never raises for model failures.

    One fragment per token while the socket keeps up; when tokens arrived while the last fragment was being
    sent, they go out together in the next one (fewer, larger frames exactly when the server is busy, and no
    added delay when it is not). Cancelling the task that runs this is the Stop button: the upstream
    connection closes and the outcome says `stopped` with the text so far.
    """
    outcome = Outcome()
    thoughts: list[str] = []
    pump: asyncio.Task[None] | None = None
    with metrics.chat_stream():
        try:
            endpoint = await achat_endpoint(request=request)
            protocol = await chat_protocol(request=request, endpoint=endpoint)
            events = stream_chat(
                endpoint,
                protocol=protocol,
                model=settings.model,
                messages=messages,
                temperature=settings.temperature,
                top_p=settings.top_p,
                max_tokens=settings.max_tokens,
                client=shared_client(endpoint),
            )
            queue: asyncio.Queue[object] = asyncio.Queue()
            pump = asyncio.create_task(_pump(events, queue))
            ended = False
            while not ended:
                batch = [await queue.get()]
                while not queue.empty():
                    batch.append(queue.get_nowait())
                text, thought = [], []
                for event in batch:
                    if event is _END:
                        ended = True
                    elif isinstance(event, TextDelta):
                        text.append(event.text)
                    elif isinstance(event, ReasoningDelta):
                        thought.append(event.text)
                    elif isinstance(event, Finished):
                        outcome.finished = event
                outcome.parts += text
                thoughts += thought
                if thought:
                    await send(chunk(reasoning_dom, "".join(thought)))
                if text:
                    await send(chunk(reply_dom, "".join(text)))
            pump.result()  # the model's failure, if any, surfaces here
        except ChatError as err:
            outcome.error = err
            metrics.upstream_error(err.kind)
            if err.kind == "not_found" and request.chat_protocol:
                await protocol_forget(request=request)
        except asyncio.CancelledError:
            # Only our own consumer cancels (Stop, or the page went away): record it as an ending, not a crash.
            outcome.stopped = True
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
        finally:
            if pump is not None and not pump.done():
                pump.cancel()
                with contextlib.suppress(asyncio.CancelledError, ChatError):
                    await pump  # the upstream is closed before the outcome is stored
    outcome.text, outcome.reasoning = "".join(outcome.parts), "".join(thoughts)
    return outcome
