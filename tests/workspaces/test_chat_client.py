"""workspaces.chat against the model stand-in over real sockets on 127.0.0.1: protocols, events, errors, closing."""

import asyncio
import contextlib
import gc
import json
import socket
import ssl
import sys
import time
from contextlib import aclosing

import pytest
from aiohttp import web

from devcluster.model_standin import ModelStandin, tokenize
from tests.workspaces.chatclient import (  # noqa: F401  (the *_fixture names are the fixtures)
    BASE,
    HELLO,
    all_closed,
    chat_error,
    collect,
    legacy_fixture,
    standin_fixture,
    texts,
    tiny_app,
    wait_for,
)
from workspaces import chat
from workspaces.chat_formats import SSEParser, legacy_request_body, render_prompt

# ---- detection -----------------------------------------------------------------------------------


async def test_detects_openai_with_base_model_and_adapter(standin):
    detection = await chat.detect_protocol(chat.Endpoint(standin.url))
    assert detection.protocol == "openai"
    base, adapter = detection.models
    assert (base.id, base.owned_by, base.parent, base.max_model_len, base.is_adapter) == (
        BASE,
        "vllm",
        None,
        131072,
        False,
    )
    assert (adapter.id, adapter.parent, adapter.is_adapter) == ("my-adapter", BASE, True)
    assert await chat.list_models(chat.Endpoint(standin.url)) == detection.models


async def test_detects_legacy_without_model_names(legacy):
    detection = await chat.detect_protocol(chat.Endpoint(legacy.url))
    assert detection == chat.Detection("legacy", ())
    assert [r["path"] for r in legacy.requests()] == ["/v1/models", "/"]


async def test_detects_transformers_runtime_as_openai():
    async with ModelStandin(runtime="transformers") as server:
        detection = await chat.detect_protocol(chat.Endpoint(server.url))
    assert detection.protocol == "openai"
    assert [(m.id, m.owned_by) for m in detection.models] == [(BASE, "kaito")]


async def test_detection_says_not_ready_when_nothing_is_served_yet():
    async def not_found(request):  # KAITO's vLLM pod serves only /metrics while it downloads weights
        return web.json_response({"detail": "Not Found"}, status=404)

    async with tiny_app([("GET", "/{tail:.*}", not_found)]) as url:
        with pytest.raises(chat.ChatError) as info:
            await chat.detect_protocol(chat.Endpoint(url))
    assert info.value.kind == "not_ready"
    assert "not serving the model yet" in info.value.message


async def test_detection_reports_the_api_server_proxy_errors():
    status = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404,
              "message": 'services "ws" not found'}  # fmt: skip

    async def missing_service(request):
        return web.json_response(status, status=404)

    async def no_endpoints(request):
        return web.json_response({**status, "reason": "ServiceUnavailable", "code": 503,
                                  "message": 'no endpoints available for service "ws"'}, status=503)  # fmt: skip

    async with tiny_app(
        [("GET", "/missing/v1/models", missing_service), ("GET", "/down/v1/models", no_endpoints)]
    ) as url:
        with pytest.raises(chat.ChatError) as missing:
            await chat.detect_protocol(chat.Endpoint(url + "/missing"))
        with pytest.raises(chat.ChatError) as down:
            await chat.detect_protocol(chat.Endpoint(url + "/down"))
    assert missing.value.kind == "not_found"
    assert 'services "ws" not found' in missing.value.message
    assert down.value.kind == "not_ready"
    assert 'no endpoints available for service "ws"' in down.value.message


# ---- OpenAI streaming ----------------------------------------------------------------------------


async def test_streams_tokens_in_order_with_usage(standin):
    events = await collect(chat.Endpoint(standin.url))
    answer = standin.answer(BASE, "hello there")
    assert answer.startswith("This is the KAITO Portal model stand-in for phi-3-mini-128k-instruct (not a real model).")
    assert texts(events) == tokenize(answer)
    assert events[-1] == chat.Finished(
        "stop",
        chat.Usage(prompt_tokens=2, completion_tokens=len(tokenize(answer)), total_tokens=2 + len(tokenize(answer))),
        True,
    )
    assert sum(isinstance(e, chat.Finished) for e in events) == 1
    sent = standin.requests()[-1]["body"]
    assert (sent["stream"], sent["stream_options"], sent["model"]) == (True, {"include_usage": True}, BASE)


async def test_adapter_answers_differently_and_the_same_prompt_gives_the_same_tokens(standin):
    endpoint = chat.Endpoint(standin.url)
    base = "".join(texts(await collect(endpoint)))
    tuned = "".join(texts(await collect(endpoint, model="my-adapter")))
    again = "".join(texts(await collect(endpoint, model="my-adapter")))
    assert tuned == again
    assert tuned.startswith("[adapter my-adapter] ") and not base.startswith("[adapter")
    assert tuned != base


async def test_max_tokens_ends_with_length_and_sampling_parameters_are_sent(standin):
    events = await collect(chat.Endpoint(standin.url), max_tokens=5, temperature=0.2, top_p=0.9)
    assert texts(events) == ["This ", "is ", "the ", "KAITO ", "Portal "]
    assert events[-1].finish_reason == "length"
    assert events[-1].usage == chat.Usage(2, 5, 7)
    sent = standin.requests()[-1]["body"]
    assert (sent["max_tokens"], sent["temperature"], sent["top_p"]) == (5, 0.2, 0.9)


async def test_reasoning_content_is_a_separate_kind_of_event():
    async with ModelStandin(reasoning=True) as server:
        events = await collect(chat.Endpoint(server.url))
        thinking, answer = server.reasoning_text("hello there"), server.answer(BASE, "hello there")
    assert "".join(texts(events, chat.ReasoningDelta)) == thinking
    assert "".join(texts(events)) == answer
    first_text = next(i for i, e in enumerate(events) if isinstance(e, chat.TextDelta))
    assert all(isinstance(e, chat.ReasoningDelta) for e in events[:first_text])
    assert events[-1].usage.completion_tokens == len(tokenize(thinking)) + len(tokenize(answer))


async def test_line_separator_inside_a_token_survives_the_sse_parser(standin):
    said = "one\u2028two\u0085three"  # str.splitlines() would cut these JSON lines apart
    events = await collect(chat.Endpoint(standin.url), messages=[{"role": "user", "content": said}])
    assert said in "".join(texts(events))
    assert events[-1].finish_reason == "stop"


async def test_transformers_runtime_refuses_stream_options_so_the_client_retries_without():
    async with ModelStandin(runtime="transformers") as server:
        events = await collect(chat.Endpoint(server.url), max_tokens=4)
        sent = [r["body"] for r in server.requests()]
    assert texts(events) == ["This ", "is ", "the ", "KAITO "]
    # transformers serve ends its stream without [DONE] but after a finish_reason: complete, with usage.
    assert events[-1] == chat.Finished("length", chat.Usage(1 + 1, 4, 6), True)
    assert ["stream_options" in body for body in sent] == [True, False]


async def test_a_whole_json_answer_instead_of_a_stream():
    async with ModelStandin(runtime="transformers") as server:
        endpoint = chat.Endpoint(server.url)
        # transformers serve answers 200 {} (not a stream) when the conversation ends with an assistant turn.
        error, seen = await chat_error(endpoint, messages=[*HELLO, {"role": "assistant", "content": "Hi"}])
    assert (error.kind, seen) == ("bad_response", [])
    assert error.message == "The model server answered without a message."

    async def whole(request):  # a server that ignores stream: true
        body = {"choices": [{"index": 0, "message": {"role": "assistant", "content": "All at once."}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 2, "completion_tokens": 3, "total_tokens": 5}}  # fmt: skip
        return web.json_response(body)

    async with tiny_app([("POST", "/v1/chat/completions", whole)]) as url:
        events = await collect(chat.Endpoint(url))
    assert events == [chat.TextDelta("All at once."), chat.Finished("stop", chat.Usage(2, 3, 5), streamed=False)]


async def test_auto_detection_when_the_protocol_is_not_known(standin, legacy):
    openai_events = await collect(chat.Endpoint(standin.url), protocol=None)
    legacy_events = await collect(chat.Endpoint(legacy.url), protocol=None)
    assert openai_events[-1].streamed is True and legacy_events[-1].streamed is False
    assert [r["path"] for r in standin.requests()] == ["/v1/models", "/v1/chat/completions"]


# ---- legacy /chat --------------------------------------------------------------------------------


async def test_legacy_answer_is_one_final_text_event(legacy):
    conversation = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What is KAITO?"},
        {"role": "assistant", "content": "An operator."},
        {"role": "user", "content": "Say more"},
    ]
    events = await collect(chat.Endpoint(legacy.url), protocol="legacy", messages=conversation,
                           temperature=0.7, top_p=0.9, max_tokens=300)  # fmt: skip
    prompt = "System: Be brief.\nUser: What is KAITO?\nAssistant: An operator.\nUser: Say more\nAssistant:"
    assert events == [chat.TextDelta(legacy.answer(BASE, prompt)), chat.Finished(None, None, streamed=False)]
    assert not events[0].text.startswith("System:")  # return_full_text=false: no prompt in front
    sent = legacy.requests()[-1]
    assert sent["path"] == "/chat"
    assert sent["body"] == {
        "prompt": prompt,
        "return_full_text": False,
        "generate_kwargs": {"max_new_tokens": 300, "temperature": 0.7, "top_p": 0.9},
    }


def test_legacy_prompt_and_generate_kwargs_mapping():
    assert render_prompt(HELLO) == "hello there"
    assert render_prompt([{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "image_url"}]}]) == "a"
    greedy = legacy_request_body(HELLO, temperature=0, top_p=None, max_tokens=None)
    assert greedy["generate_kwargs"] == {"max_new_tokens": 512, "do_sample": False}


async def test_legacy_errors_quote_the_detail(legacy):
    error, seen = await chat_error(
        chat.Endpoint(legacy.url), protocol="legacy", messages=[{"role": "user", "content": ""}]
    )
    assert (error.kind, error.status, seen) == ("rejected", 400, [])
    assert error.message.endswith("The server says: Text generation parameter prompt required")
    legacy.add_fault("500")
    error, _ = await chat_error(chat.Endpoint(legacy.url), protocol="legacy")
    assert (error.kind, error.status) == ("upstream_error", 500)
    assert "Stand-in fault: internal server error" in error.message


# ---- errors --------------------------------------------------------------------------------------


async def test_unreachable_when_the_server_is_down():
    server = ModelStandin()
    await server.start()
    url = server.url
    await server.stop()
    error, _ = await chat_error(chat.Endpoint(url))
    assert error.kind == "unreachable"
    assert error.message.startswith(f"Cannot reach the model server at {url}")
    assert error.http_status == 502


async def test_unreachable_when_the_name_does_not_resolve():
    error, _ = await chat_error(chat.Endpoint("http://ws.no-such-namespace.invalid:80"))
    assert error.kind == "unreachable"
    assert "ws.no-such-namespace.invalid" in error.message


async def test_unknown_model_is_not_found_with_the_model_id(standin):
    error, seen = await chat_error(chat.Endpoint(standin.url), model="phi-4-nope")
    assert (error.kind, error.status, error.model, seen) == ("not_found", 404, "phi-4-nope", [])
    assert "The model `phi-4-nope` was not found" in error.message
    assert "The server says: The model `phi-4-nope` does not exist." in error.message


async def test_rate_limit_quotes_kaito_message(standin):
    standin.add_fault("429", waiting=12, max_num_seqs=8)
    error, _ = await chat_error(chat.Endpoint(standin.url))
    assert (error.kind, error.status, error.http_status) == ("rate_limited", 429, 429)
    assert error.message.endswith("The server says: Too many requests: waiting queue (12) exceeds max-num-seqs (8).")
    assert error.openai_error()["error"]["code"] == 429


async def test_rate_limit_from_a_full_queue():
    async with ModelStandin(max_num_seqs=1, token_delay=0.05) as server:
        endpoint = chat.Endpoint(server.url)
        busy = [asyncio.create_task(collect(endpoint)) for _ in range(3)]  # 1 running + 2 waiting
        await wait_for(server, lambda s: s["open_streams"] == 3)
        error, _ = await chat_error(endpoint)
        for task in busy:
            task.cancel()
        await asyncio.gather(*busy, return_exceptions=True)
    assert error.kind == "rate_limited"
    assert "Too many requests: waiting queue (2) exceeds max-num-seqs (1)." in error.message


@pytest.mark.parametrize(
    ("mode", "kind", "status", "quoted"),
    [
        ("500", "upstream_error", 500, "Stand-in fault: internal server error"),
        ("503", "not_ready", 503, "Stand-in fault: service unavailable"),
        ("404", "not_found", 404, f"The model `{BASE}` does not exist."),
    ],
)
async def test_server_errors(standin, mode, kind, status, quoted):
    standin.add_fault(mode)
    error, seen = await chat_error(chat.Endpoint(standin.url))
    assert (error.kind, error.status, seen) == (kind, status, [])
    assert quoted in error.message


async def test_other_4xx_quotes_the_error_message():
    async with ModelStandin(max_model_len=10) as server:
        error, _ = await chat_error(chat.Endpoint(server.url), max_tokens=20)
    assert (error.kind, error.status) == ("rejected", 400)
    assert "This model's maximum context length is 10 tokens. However, you requested 22 tokens" in error.message


async def test_connect_timeout():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)  # never accepted: once the backlog is full, further SYNs go unanswered
    port = listener.getsockname()[1]
    fillers = []
    try:
        for _ in range(3):
            filler = socket.socket()
            filler.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                filler.connect(("127.0.0.1", port))
            fillers.append(filler)
        started = time.monotonic()
        error, _ = await chat_error(chat.Endpoint(f"http://127.0.0.1:{port}", connect_timeout=0.3))
        elapsed = time.monotonic() - started
    finally:
        for filler in fillers:
            filler.close()
        listener.close()
    assert error.kind == "timeout"
    assert error.message == f"No connection to the model server at http://127.0.0.1:{port} within 0.3 s."
    assert elapsed < 2


async def test_accepted_but_never_answered_is_a_read_timeout_and_the_socket_is_closed(standin):
    standin.add_fault("hang")
    started = time.monotonic()
    error, seen = await chat_error(chat.Endpoint(standin.url, read_timeout=0.3))
    assert time.monotonic() - started < 2
    assert (error.kind, seen, error.partial_text) == ("timeout", [], "")
    assert "sent nothing for 0.3 s" in error.message
    await wait_for(standin, all_closed)


async def test_slow_first_token_within_the_read_timeout_is_fine_beyond_it_a_timeout(standin):
    standin.add_fault("slow_first_token", delay=0.4)
    events = await collect(chat.Endpoint(standin.url, read_timeout=2))
    assert events[-1].finish_reason == "stop"
    standin.add_fault("slow_first_token", delay=2)
    error, _ = await chat_error(chat.Endpoint(standin.url, read_timeout=0.3))
    assert error.kind == "timeout"
    await wait_for(standin, all_closed)


async def test_silence_between_tokens_is_a_timeout_with_the_partial_text(standin):
    standin.add_fault("stall", after_tokens=3)
    error, seen = await chat_error(chat.Endpoint(standin.url, read_timeout=0.3))
    assert error.kind == "timeout"
    assert texts(seen) == ["This ", "is ", "the "] and error.partial_text == "This is the "
    assert error.message.endswith("The answer so far is incomplete.")
    assert not any(isinstance(e, chat.Finished) for e in seen)
    await wait_for(standin, all_closed)


async def test_cut_stream_is_not_presented_as_complete(standin):
    standin.add_fault("cut", after_tokens=4)
    error, seen = await chat_error(chat.Endpoint(standin.url))
    assert error.kind == "stream_cut"
    assert error.partial_text == "This is the KAITO "
    assert texts(seen) == tokenize(error.partial_text)
    assert not any(isinstance(e, chat.Finished) for e in seen)
    stats = await wait_for(standin, all_closed)
    assert (stats["streams_cut"], stats["streams_completed"]) == (1, 0)


async def test_error_inside_the_stream(standin):
    standin.add_fault("stream_error", after_tokens=2)
    error, seen = await chat_error(chat.Endpoint(standin.url))
    assert (error.kind, error.partial_text, texts(seen)) == ("upstream_error", "This is ", ["This ", "is "])
    assert "Stand-in fault: the engine failed mid-answer" in error.message


async def test_stream_closed_cleanly_without_done_or_finish_reason_is_cut():
    async def truncated(request):
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        chunk = {"choices": [{"index": 0, "delta": {"content": "Half an "}, "finish_reason": None}]}
        await response.write(f"data: {json.dumps(chunk)}\n\n".encode())
        await response.write_eof()  # a proper end of body, yet no finish_reason and no [DONE]
        return response

    async with tiny_app([("POST", "/v1/chat/completions", truncated)]) as url:
        error, seen = await chat_error(chat.Endpoint(url))
    assert (error.kind, error.partial_text, texts(seen)) == ("stream_cut", "Half an ", ["Half an "])


async def test_junk_instead_of_events_is_a_bad_response():
    async def junk(request):
        return web.Response(body=b"data: {not json\n\n", content_type="text/event-stream")

    async with tiny_app([("POST", "/v1/chat/completions", junk)]) as url:
        error, _ = await chat_error(chat.Endpoint(url))
    assert error.kind == "bad_response"


# ---- closing -------------------------------------------------------------------------------------


async def test_stopping_early_closes_the_upstream_stream(standin):
    standin.token_delay = 0.05
    received = []
    async with aclosing(
        chat.stream_chat(chat.Endpoint(standin.url), protocol="openai", model=BASE, messages=HELLO)
    ) as events:
        async for event in events:
            received.append(event)
            if len(received) == 3:
                break
    stats = await wait_for(standin, all_closed)
    assert (stats["streams_disconnected"], stats["streams_completed"]) == (1, 0)


async def test_closing_is_explicit_not_left_to_the_garbage_collector(standin):
    # With the loop's async-generator finalizer switched off, only explicit aclose() calls (the caller's
    # aclosing() and chat.py's own, on its inner generators) can close the upstream.
    hooks = sys.get_asyncgen_hooks()
    sys.set_asyncgen_hooks(firstiter=hooks.firstiter, finalizer=lambda agen: None)
    try:
        standin.token_delay = 0.05
        async with chat.make_client(chat.Endpoint(standin.url)) as client:
            for protocol in ("openai", None):  # None: detection first, then the same streaming path
                stream = chat.stream_chat(
                    chat.Endpoint(standin.url), protocol=protocol, model=BASE, messages=HELLO, client=client
                )
                async with aclosing(stream) as events:
                    async for _event in events:
                        break
                await wait_for(standin, lambda s: s["open_streams"] == 0 and s["open_connections"] == 0)
    finally:
        sys.set_asyncgen_hooks(*hooks)
    assert standin.stats()["streams_disconnected"] == 2


async def test_stopping_early_without_aclosing_still_closes_once_collected(standin):
    standin.token_delay = 0.05
    async for _event in chat.stream_chat(chat.Endpoint(standin.url), protocol="openai", model=BASE, messages=HELLO):
        break
    gc.collect()  # the loop's async-generator finalizer schedules aclose(); aclosing() avoids the wait
    stats = await wait_for(standin, all_closed)
    assert stats["streams_disconnected"] == 1


async def test_cancelling_the_consumer_closes_the_upstream_stream(standin):
    standin.token_delay = 0.05
    task = asyncio.create_task(collect(chat.Endpoint(standin.url)))
    await wait_for(standin, lambda s: s["open_streams"] == 1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    stats = await wait_for(standin, all_closed)
    assert stats["streams_disconnected"] == 1


async def test_a_shared_client_keeps_no_connection_after_errors_and_early_stops(standin):
    endpoint = chat.Endpoint(standin.url, read_timeout=0.3)
    standin.token_delay = 0.05
    async with chat.make_client(endpoint) as client:
        for mode, options in [("cut", {"after_tokens": 1}), ("stall", {"after_tokens": 1}), ("hang", {})]:
            standin.add_fault(mode, **options)
            await chat_error(endpoint, client=client)
            await wait_for(standin, lambda s: s["open_streams"] == 0 and s["open_connections"] == 0)
        async with aclosing(
            chat.stream_chat(endpoint, protocol="openai", model=BASE, messages=HELLO, client=client)
        ) as events:
            async for _event in events:
                break
        await wait_for(standin, lambda s: s["open_connections"] == 0)
        # After a complete exchange the connection may stay pooled for reuse: that is the point of sharing.
        standin.token_delay = 0
        await collect(endpoint, client=client)
        assert standin.stats()["open_connections"] <= 1
    await wait_for(standin, all_closed)


# ---- endpoint and TLS ----------------------------------------------------------------------------


async def test_endpoint_headers_are_sent_and_not_shown_in_repr(standin):
    endpoint = chat.Endpoint(standin.url, headers={"Authorization": "Bearer sa-token-123"})
    assert "sa-token-123" not in repr(endpoint)
    await collect(endpoint)
    assert standin.requests()[-1]["headers"]["Authorization"] == "Bearer sa-token-123"


async def test_tls_with_ca_file_and_client_certificate(tmp_path):
    from devcluster.pki import create_pki  # CA, a serving cert for 127.0.0.1 and an admin client cert

    pki = create_pki(tmp_path)
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(pki.ca_cert))
    server_tls.load_cert_chain(pki.serving_cert, pki.serving_key)
    server_tls.verify_mode = ssl.CERT_REQUIRED  # like the API server: no client certificate, no answer
    async with ModelStandin(ssl_context=server_tls) as server:
        assert server.url.startswith("https://127.0.0.1:")
        good = chat.Endpoint(server.url, verify=str(pki.ca_cert), cert=(str(pki.admin_cert), str(pki.admin_key)))
        assert (await chat.detect_protocol(good)).protocol == "openai"
        assert texts(await collect(good))[0] == "This "
        error, _ = await chat_error(chat.Endpoint(server.url, verify=str(pki.ca_cert)))  # no client cert
        # TLS 1.3: the client finishes its handshake first, so the refusal arrives as a reset on the first read.
        assert error.kind == "upstream_error"
        assert error.message.endswith("closed the connection without answering: [Errno 104] Connection reset by peer.")
        error, _ = await chat_error(chat.Endpoint(server.url))  # the public CA bundle does not know this CA
        assert error.kind == "unreachable"
        assert "CERTIFICATE_VERIFY_FAILED" in error.message


# ---- SSE parser ----------------------------------------------------------------------------------


def test_sse_parser_handles_split_crlf_comments_multiline_data_and_drops_an_unfinished_event():
    parser = SSEParser()
    stream = b"\xef\xbb\xbf: keep-alive\r\nevent: delta\r\nid: 7\r\ndata: line one\r\ndata:line two\r\n\r\ndata: x\rdata: y\r\rdata: half"
    events = []
    for i in range(len(stream)):  # one byte at a time: CRLF and multi-byte characters split everywhere
        events += parser.feed(stream[i : i + 1])
    assert [(e.event, e.id, e.data) for e in events] == [("delta", "7", "line one\nline two"), ("message", "7", "x\ny")]
