"""The pass-through relay (chat.open_upstream) with the real openai client, in aiohttp and in a Django view."""

import asyncio
import json
from contextlib import asynccontextmanager

import httpx
import openai
import pytest
from aiohttp import web
from django.contrib.auth.decorators import login_not_required
from django.core.handlers.asgi import ASGIHandler
from django.http import JsonResponse, StreamingHttpResponse
from django.urls import path as url_path
from django.views.decorators.csrf import csrf_exempt

from devcluster.model_standin import ModelStandin, tokenize
from tests.workspaces.chatclient import (  # noqa: F401  (the *_fixture names are the fixtures)
    BASE,
    HELLO,
    all_closed,
    legacy_fixture,
    standin_fixture,
    wait_for,
)
from workspaces import chat


@asynccontextmanager
async def relay(upstream_url, protocol="openai", served_model=None):
    """The smallest portal: an aiohttp app that relays /v1/* through chat.open_upstream."""
    endpoint = chat.Endpoint(upstream_url, headers={"Authorization": "Bearer portal-sa-token"})
    seen = []

    async def handle(request):
        body = await request.json() if request.can_read_body else None
        seen.append(dict(request.headers))
        try:
            upstream = await chat.open_upstream(
                endpoint,
                request.method,
                request.path,
                body,
                protocol=protocol,
                client=client,
                served_model=served_model,
            )
        except chat.ChatError as err:
            return web.json_response(err.openai_error(), status=err.http_status)
        response = web.StreamResponse(status=upstream.status, headers=upstream.headers)
        async with upstream:  # closes the upstream even when cancelled inside response.write()
            await response.prepare(request)
            async for chunk in upstream.body:
                await response.write(chunk)
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_route("*", "/v1/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None, handler_cancellation=True)  # client gone -> handler cancelled
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    async with chat.make_client(endpoint) as client:
        api = openai.AsyncOpenAI(
            base_url=f"http://127.0.0.1:{runner.addresses[0][1]}/v1", api_key="portal-user-key", max_retries=0
        )
        try:
            yield api, seen
        finally:
            await api.close()
            await runner.cleanup()


async def test_openai_client_streams_through_the_relay(standin):
    async with relay(standin.url) as (api, seen):
        stream = await api.chat.completions.create(
            model="my-adapter", messages=HELLO, stream=True, stream_options={"include_usage": True}
        )
        chunks = [chunk async for chunk in stream]
        models = await api.models.list()
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert content == standin.answer("my-adapter", "hello there")
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].usage.completion_tokens == len(tokenize(content))
    assert [m.id for m in models.data] == [BASE, "my-adapter"]
    upstream_headers = standin.requests()[-2]["headers"]
    assert upstream_headers["Authorization"] == "Bearer portal-sa-token"  # the user's key stays at the portal
    assert seen[0]["Authorization"] == "Bearer portal-user-key"


async def test_openai_client_non_streamed_and_errors_through_the_relay(standin):
    async with relay(standin.url) as (api, _):
        completion = await api.chat.completions.create(model=BASE, messages=HELLO, max_tokens=3)
        assert completion.choices[0].message.content == "This is the "
        assert (completion.choices[0].finish_reason, completion.usage.total_tokens) == ("length", 5)
        standin.add_fault("429")
        with pytest.raises(openai.RateLimitError) as limited:
            await api.chat.completions.create(model=BASE, messages=HELLO)
        assert "Too many requests: waiting queue (257) exceeds max-num-seqs (256)." in str(limited.value)
        with pytest.raises(openai.NotFoundError) as missing:
            await api.chat.completions.create(model="nope", messages=HELLO)
        assert "The model `nope` does not exist." in str(missing.value)


async def test_client_leaving_the_relay_closes_the_upstream(standin):
    standin.token_delay = 0.05
    async with relay(standin.url) as (api, _):
        stream = await api.chat.completions.create(model=BASE, messages=HELLO, stream=True)
        received = 0
        async for _chunk in stream:
            received += 1
            if received == 3:
                break
        await stream.close()
        stats = await wait_for(standin, all_closed)
    assert (stats["streams_disconnected"], stats["streams_completed"]) == (1, 0)


STREAM_BODY = {"model": BASE, "messages": HELLO, "stream": True}


async def test_cancelled_while_waiting_for_upstream_bytes_closes_the_upstream(standin):
    standin.token_delay = 0.2
    upstream = await chat.open_upstream(chat.Endpoint(standin.url), "POST", "/v1/chat/completions", STREAM_BODY)

    reading = asyncio.Event()

    async def consume():  # no finally, no aclose: the body closes itself when cancelled in __anext__
        async for _chunk in upstream.body:
            reading.set()

    task = asyncio.create_task(consume())
    await reading.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    stats = await wait_for(standin, all_closed)
    assert stats["streams_disconnected"] == 1


async def test_django_style_close_from_a_worker_thread_closes_the_upstream(standin):
    # Django's StreamingHttpResponse.close() calls body.close() through sync_to_async, i.e. from a thread.
    standin.token_delay = 0.05
    upstream = await chat.open_upstream(chat.Endpoint(standin.url), "POST", "/v1/chat/completions", STREAM_BODY)
    assert (upstream.status, upstream.headers["content-type"]) == (200, "text/event-stream; charset=utf-8")
    first = await upstream.body.__anext__()
    assert first.startswith(b"data: {")
    await asyncio.to_thread(upstream.body.close)
    stats = await wait_for(standin, all_closed)
    assert (stats["streams_disconnected"], stats["streams_completed"]) == (1, 0)


async def test_relayed_bytes_are_exactly_the_upstream_bytes(standin):
    async with await chat.open_upstream(chat.Endpoint(standin.url), "POST", "/v1/chat/completions", STREAM_BODY) as up:
        raw = b"".join([chunk async for chunk in up.body])
    frames = raw.split(b"\n\n")
    assert frames[-2:] == [b"data: [DONE]", b""]
    contents = [json.loads(f[6:])["choices"][0]["delta"].get("content") for f in frames[:-2]]
    assert "".join(c for c in contents if c) == standin.answer(BASE, "hello there")
    await wait_for(standin, all_closed)


async def test_cut_upstream_is_not_a_clean_end_for_the_openai_client(standin):
    standin.add_fault("cut", after_tokens=2)
    async with relay(standin.url) as (api, _):
        stream = await api.chat.completions.create(model=BASE, messages=HELLO, stream=True)
        received = []
        with pytest.raises((openai.APIError, httpx.HTTPError)):
            async for chunk in stream:
                received.append(chunk)
    assert "".join(c.choices[0].delta.content or "" for c in received) == "This is "
    await wait_for(standin, all_closed)


async def test_relay_answers_502_when_the_upstream_is_down():
    server = ModelStandin()
    await server.start()
    url = server.url
    await server.stop()
    async with relay(url) as (api, _):
        with pytest.raises(openai.APIStatusError) as info:
            await api.chat.completions.create(model=BASE, messages=HELLO)
    assert info.value.status_code == 502
    assert "Cannot reach the model server" in str(info.value)


async def test_only_v1_paths_are_relayed(standin):
    endpoint = chat.Endpoint(standin.url)
    for method, path in [("GET", "/v1/../api/v1/secrets"), ("GET", "/v1/models/../../x"), ("GET", "/health"),
                         ("DELETE", "/v1/models"), ("GET", "/v1//models"), ("GET", "/v1/models?x=1")]:  # fmt: skip
        with pytest.raises(chat.ChatError) as info:
            await chat.open_upstream(endpoint, method, path)
        assert (info.value.kind, info.value.http_status) == ("not_found", 404)
    assert standin.requests() == []


# A Django async streaming view, the way the portal's /api/workspaces/<id>/v1/chat/completions can relay.
DJANGO_UPSTREAM = {}


@login_not_required  # the portal authenticates this endpoint with per-user API tokens
@csrf_exempt
async def django_relay_view(request):
    try:
        upstream = await chat.open_upstream(DJANGO_UPSTREAM["endpoint"], request.method, "/v1/chat/completions",
                                            json.loads(request.body))  # fmt: skip
    except chat.ChatError as err:
        return JsonResponse(err.openai_error(), status=err.http_status)
    # Django closes the body via close() (from a worker thread) when the client disconnects.
    return StreamingHttpResponse(upstream.body, status=upstream.status, headers=upstream.headers)


urlpatterns = [url_path("v1/chat/completions", django_relay_view)]


async def test_django_streaming_view_relays_and_closes_the_upstream_when_the_client_leaves(standin, settings):
    settings.ROOT_URLCONF = __name__
    standin.token_delay = 0.05
    DJANGO_UPSTREAM["endpoint"] = chat.Endpoint(standin.url)
    body = json.dumps({"model": BASE, "messages": HELLO, "stream": True}).encode()
    scope = {"type": "http", "method": "POST", "path": "/v1/chat/completions", "query_string": b"",
             "headers": [(b"content-type", b"application/json"), (b"host", b"testserver")], "server": ("testserver", 80),
             "client": ("127.0.0.1", 1), "scheme": "http", "http_version": "1.1", "asgi": {"version": "3.0"}}  # fmt: skip
    inbox = asyncio.Queue()
    await inbox.put({"type": "http.request", "body": body, "more_body": False})
    sent = []

    async def send(message):
        sent.append(message)
        if len(sent) == 4:  # start + three body parts, then the browser tab closes ...
            await inbox.put({"type": "http.disconnect"})
            await asyncio.sleep(1)  # ... while this write hangs: the cancellation lands here, not upstream

    await asyncio.wait_for(ASGIHandler()(scope, inbox.get, send), 10)
    assert sent[0]["status"] == 200
    assert dict(sent[0]["headers"])[b"content-type"] == b"text/event-stream; charset=utf-8"
    assert b"".join(m.get("body", b"") for m in sent[1:]).startswith(b"data: {")
    stats = await wait_for(standin, all_closed)
    assert (stats["streams_disconnected"], stats["streams_completed"]) == (1, 0)


async def test_openai_client_talks_to_a_legacy_workspace_through_the_translation(legacy):
    async with relay(legacy.url, protocol="legacy", served_model="falcon-7b-instruct") as (api, _):
        models = await api.models.list()
        completion = await api.chat.completions.create(model="falcon-7b-instruct", messages=HELLO)
        stream = await api.chat.completions.create(model="falcon-7b-instruct", messages=HELLO, stream=True)
        chunks = [chunk async for chunk in stream]
        with pytest.raises(openai.BadRequestError) as refused:
            await api.chat.completions.create(model="falcon-7b-instruct", messages=[{"role": "user", "content": ""}])
        with pytest.raises(openai.BadRequestError) as fractional:
            await api.chat.completions.create(model="falcon-7b-instruct", messages=HELLO, max_tokens=2.5)
    answer = legacy.answer(BASE, "hello there")
    assert [m.id for m in models.data] == ["falcon-7b-instruct"]
    assert completion.object == "chat.completion"
    assert (completion.choices[0].message.content, completion.choices[0].finish_reason) == (answer, "stop")
    assert completion.usage is None  # never invented
    assert [c.choices[0].delta.content for c in chunks] == [answer, None]
    assert [c.choices[0].finish_reason for c in chunks] == [None, "stop"]
    assert "Text generation parameter prompt required" in str(refused.value)
    assert "max_tokens must be an integer" in str(fractional.value)
