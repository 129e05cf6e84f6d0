"""The model stand-in's model server endpoints: health, models, chat completions (streamed or not), legacy /chat."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from aiohttp import web

from devcluster.model_standin.answers import (
    ChatPlan,
    Reply,
    completion_body,
    legacy_reply,
    loads,
    model_list,
    openai_error_body,
    plan_chat,
    sse,
    stream_events,
)
from devcluster.model_standin.faults import FAULT, MID_STREAM_MODES, Fault, json_response

if TYPE_CHECKING:
    from devcluster.model_standin.server import ModelStandin


async def health(standin: ModelStandin, request: web.Request) -> web.Response:
    if standin.protocol == "openai" and standin.runtime == "vllm":
        return web.Response(status=200)  # vLLM's /health: 200 with an empty body
    return json_response({"status": "Healthy"})


async def home(standin: ModelStandin, request: web.Request) -> web.Response:
    return json_response({"message": "Server is running"})


async def models(standin: ModelStandin, request: web.Request) -> web.Response:
    served = standin.served()
    return json_response(model_list(standin.runtime, standin.model, served, standin.created, standin.max_model_len))


async def chat_completions(standin: ModelStandin, request: web.Request) -> web.StreamResponse:
    plan = plan_chat(
        loads(await request.read()),
        runtime=standin.runtime,
        model=standin.model,
        served=standin.served(),
        max_model_len=standin.max_model_len,
        reasoning=standin.reasoning,
    )
    if isinstance(plan, Reply):
        return json_response(plan.body, plan.status)
    fault = request.get(FAULT)
    if fault is not None and fault.mode == "slow_first_token":
        await asyncio.sleep(fault.delay)
    if not plan.stream:
        await asyncio.sleep(standin.token_delay * len(plan.tokens))  # a real server answers once all are generated
        return json_response(completion_body(standin.runtime, plan))
    return await _stream(standin, request, plan, fault)


async def _stream(
    standin: ModelStandin, request: web.Request, plan: ChatPlan, fault: Fault | None
) -> web.StreamResponse:
    opening, per_token, closing = stream_events(standin.runtime, plan)
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache"}
    )
    await response.prepare(request)
    standin.count("open_streams", 1)
    standin.count("streams_started", 1)
    outcome = "streams_disconnected"
    try:
        await response.write(opening)
        for i, event in enumerate(per_token):
            if fault is not None and fault.mode in MID_STREAM_MODES and i - plan.n_thinking == fault.after_tokens:
                if fault.mode == "stall":  # connection stays open, nothing more comes: a read timeout
                    await standin.until_stopped()
                    raise ConnectionResetError("stand-in stopped")
                if fault.mode == "stream_error":  # how vLLM reports an engine failure inside a 200 stream
                    message = "Stand-in fault: the engine failed mid-answer"
                    await response.write(sse(openai_error_body(message, "InternalServerError", 500)))
                    outcome = "streams_completed"
                    return response
                outcome = "streams_cut"
                if request.transport is not None:
                    request.transport.close()  # flushes what was written, then closes: no final chunk, no [DONE]
                await asyncio.sleep(3600)  # handler_cancellation ends this as the connection drops
            await asyncio.sleep(standin.token_delay)
            await response.write(event)
        for event in closing:
            await response.write(event)
        await response.write_eof()
        outcome = "streams_completed"
        return response
    finally:
        standin.count("open_streams", -1)
        standin.count(outcome, 1)


async def legacy_chat(standin: ModelStandin, request: web.Request) -> web.Response:
    reply = legacy_reply(loads(await request.read()), standin.model)
    if reply.status == 200:
        fault = request.get(FAULT)
        slow = fault.delay if fault and fault.mode == "slow_first_token" else 0
        await asyncio.sleep(slow + standin.token_delay * reply.tokens)
    return json_response(reply.body, reply.status)
