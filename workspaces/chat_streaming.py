"""One answer from a workspace's model, streamed to a WebSocket as HTML fragments; says how it ended."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any

from django.template.loader import render_to_string
from django.utils.html import escape

from portal import metrics
from workspaces.chat import ChatError, Finished, ReasoningDelta, TextDelta, stream_chat
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

    Cancelling the task that runs this is the Stop button: the upstream connection closes (aclosing) and
    the outcome says `stopped` with the text so far.
    """
    outcome = Outcome()
    thoughts: list[str] = []
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
            async with aclosing(events) as stream:
                async for event in stream:
                    if isinstance(event, TextDelta):
                        outcome.parts.append(event.text)
                        await send(chunk(reply_dom, event.text))
                    elif isinstance(event, ReasoningDelta):
                        thoughts.append(event.text)
                        await send(chunk(reasoning_dom, event.text))
                    else:
                        outcome.finished = event
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
    outcome.text, outcome.reasoning = "".join(outcome.parts), "".join(thoughts)
    return outcome
