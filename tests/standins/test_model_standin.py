"""The model stand-in speaks KAITO's upstream protocols (OpenAPI specs, samples, openai types); faults and the CLI."""

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from contextlib import aclosing
from pathlib import Path

import aiohttp
import httpx
import jsonschema
import pytest
from openai.types import Model
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from devcluster.model_standin import DEFAULT_MODEL, ModelStandin, tokenize
from workspaces import chat

BASE = DEFAULT_MODEL
SPECS = Path(__file__).resolve().parents[2] / "devcluster" / "kaito_api"
HELLO = [{"role": "user", "content": "hello there"}]
KAITO_429 = {
    "error": {
        "message": "Too many requests: waiting queue (257) exceeds max-num-seqs (256).",
        "type": "requests",
        "param": None,
        "code": "rate_limit_exceeded",
    }
}


def spec(name):
    return json.loads((SPECS / name / "api_spec.json").read_text())


def validate(spec_name, schema_name, instance):
    """Validate against components/schemas/<schema_name> of a copied spec (OpenAPI 3.1 = JSON Schema 2020-12)."""
    document = spec(spec_name)
    assert schema_name in document["components"]["schemas"], f"{spec_name} defines no {schema_name}"
    schema = {"$ref": f"#/components/schemas/{schema_name}", "components": document["components"]}
    jsonschema.Draft202012Validator(schema).validate(instance)


def sse_payloads(raw: bytes):
    """data: payloads of a well-formed SSE body; asserts every event is one data line ended by a blank line."""
    text = raw.decode()
    assert text.endswith("\n\n")
    events = text[:-2].split("\n\n")
    assert all(e.startswith("data: ") and "\n" not in e for e in events)
    return [e[len("data: ") :] for e in events]


@pytest.fixture
async def standin():
    async with ModelStandin(adapters=["my-adapter"]) as server:
        yield server


@pytest.fixture
async def http():
    async with httpx.AsyncClient(timeout=10) as client:
        yield client


# ---- against the OpenAPI specs -------------------------------------------------------------------


async def test_models_list_matches_the_transformers_spec_and_vllm_sample(standin, http):
    body = (await http.get(f"{standin.url}/v1/models")).json()
    validate("text-generation", "ModelListResponse", body)  # vLLM's spec leaves /v1/models undefined ({})
    base, adapter = body["data"]
    # kaito-reference §3.2 sample keys: id, object, owned_by, max_model_len, root, parent, permission (+ created)
    assert set(base) == {"id", "object", "created", "owned_by", "root", "parent", "max_model_len", "permission"}
    assert (base["id"], base["owned_by"], base["parent"], base["max_model_len"]) == (BASE, "vllm", None, 131072)
    # vLLM's LoRA model cards carry the adapter path as root and no max_model_len of their own.
    assert (adapter["id"], adapter["parent"], adapter["root"], adapter["max_model_len"]) == (
        "my-adapter", BASE, "/mnt/adapter/my-adapter", None
    )  # fmt: skip
    for entry in body["data"]:
        Model.model_validate(entry)


async def test_transformers_runtime_models_list_matches_its_spec_example(http):
    async with ModelStandin(runtime="transformers", model="my-model") as server:
        body = (await http.get(f"{server.url}/v1/models")).json()
        health = (await http.get(f"{server.url}/health")).json()
    validate("text-generation", "ModelListResponse", body)
    example = spec("text-generation")["paths"]["/v1/models"]["get"]["responses"]["200"]["content"]["application/json"][
        "example"
    ]
    assert {k: v for k, v in body["data"][0].items() if k != "created"} == {
        k: v for k, v in example["data"][0].items() if k != "created"
    }
    assert health == {"status": "Healthy"}


async def test_non_streamed_completion_has_the_documented_shape(standin, http):
    response = await http.post(f"{standin.url}/v1/chat/completions", json={"model": BASE, "messages": HELLO})
    body = response.json()
    # The vLLM spec types responses as {}; kaito-reference §3.2 quotes a real answer: same keys here.
    assert set(body) == {"choices", "created", "id", "kv_transfer_params", "model", "object", "prompt_logprobs",
                         "service_tier", "system_fingerprint", "usage"}  # fmt: skip
    (choice,) = body["choices"]
    assert set(choice) == {"finish_reason", "index", "logprobs", "message", "stop_reason"}
    assert set(choice["message"]) == {"annotations", "audio", "content", "function_call", "reasoning_content",
                                      "refusal", "role", "tool_calls"}  # fmt: skip
    assert set(body["usage"]) == {"completion_tokens", "prompt_tokens", "prompt_tokens_details", "total_tokens"}
    completion = ChatCompletion.model_validate(body)
    answer = standin.answer(BASE, "hello there")
    assert (completion.object, completion.model, completion.choices[0].message.content) == (
        "chat.completion",
        BASE,
        answer,
    )
    assert completion.usage.completion_tokens == len(tokenize(answer))
    assert completion.usage.prompt_tokens == 2
    assert completion.usage.total_tokens == 2 + len(tokenize(answer))


async def test_requests_sent_by_chat_py_are_valid_for_both_openai_specs(standin):
    async with ModelStandin(runtime="transformers") as transformers:
        for server in (standin, transformers):
            endpoint = chat.Endpoint(server.url)
            async with aclosing(chat.stream_chat(endpoint, protocol="openai", model=BASE, messages=HELLO,
                                                 temperature=0.5, top_p=0.8, max_tokens=7)) as events:  # fmt: skip
                [event async for event in events]
        bodies = [
            r["body"] for r in standin.requests() + transformers.requests() if r["path"] == "/v1/chat/completions"
        ]
    assert len(bodies) == 3  # vLLM once; transformers refused stream_options (422), then the retry
    for body in bodies:
        validate("vllm", "ChatCompletionRequest", body)  # additionalProperties: false there
        validate("text-generation", "ChatCompletionRequest", body)
    assert "stream_options" in bodies[0] and "stream_options" not in bodies[2]


async def test_legacy_shapes_match_the_v0_8_1_spec(http):
    async with ModelStandin(protocol="legacy") as server:
        home = await http.get(f"{server.url}/")
        health = await http.get(f"{server.url}/health")
        async with aclosing(chat.stream_chat(chat.Endpoint(server.url), protocol="legacy", model="x", messages=HELLO,
                                             temperature=0.3, top_p=0.9, max_tokens=20)) as events:  # fmt: skip
            [event async for event in events]
        sent = server.requests()[-1]["body"]
        answered = await http.post(f"{server.url}/chat", json=sent)
        refused = await http.post(f"{server.url}/chat", json={"return_full_text": True})
    validate("text-generation-v0.8.1", "HomeResponse", home.json())
    assert home.json() == {"message": "Server is running"}
    validate("text-generation-v0.8.1", "HealthStatus", health.json())
    validate("text-generation-v0.8.1", "UnifiedRequestModel", sent)  # what chat.py sends
    validate("text-generation-v0.8.1", "GenerateKwargs", sent["generate_kwargs"])
    examples = spec("text-generation-v0.8.1")["paths"]["/chat"]["post"]["responses"]
    sample_keys = {frozenset(e["value"]) for e in examples["200"]["content"]["application/json"]["examples"].values()}
    assert answered.status_code == 200
    assert sample_keys == {frozenset(answered.json())} == {frozenset({"Result"})}
    assert refused.status_code == 400
    validate("text-generation-v0.8.1", "ErrorResponse", refused.json())
    assert refused.json() == examples["400"]["content"]["application/json"]["examples"]["missing_prompt"]["value"]


async def test_the_specs_own_request_examples_are_answered(http):
    tg = spec("text-generation")["paths"]["/v1/chat/completions"]["post"]["requestBody"]["content"]["application/json"]
    legacy_examples = spec("text-generation-v0.8.1")["paths"]["/chat"]["post"]["requestBody"]["content"][
        "application/json"
    ]["examples"]
    async with ModelStandin(runtime="transformers", model=tg["example"]["model"]) as server:
        streamed = await http.post(f"{server.url}/v1/chat/completions", json=tg["example"])
    assert streamed.status_code == 200
    assert streamed.headers["content-type"].startswith("text/event-stream")
    chunks = [ChatCompletionChunk.model_validate(json.loads(p)) for p in sse_payloads(streamed.content)]
    assert "".join(c.choices[0].delta.content or "" for c in chunks).startswith(
        "This is the KAITO Portal model stand-in"
    )
    async with ModelStandin(protocol="legacy") as server:
        text_generation = await http.post(
            f"{server.url}/chat", json=legacy_examples["text_generation_example"]["value"]
        )
        conversation = await http.post(f"{server.url}/chat", json=legacy_examples["conversation_example"]["value"])
    # return_full_text: true in the example, so the pipeline repeats the prompt before its answer.
    assert text_generation.json()["Result"].startswith("Tell me a joke" + "This is the KAITO Portal model stand-in")
    # KAITO's text-generation pipeline wants `prompt`; `messages` is for the conversational pipeline.
    assert (conversation.status_code, conversation.json()) == (
        400,
        {"detail": "Text generation parameter prompt required"},
    )


# ---- OpenAI protocol details ---------------------------------------------------------------------


async def test_streamed_frames_are_vllm_like(standin, http):
    body = {"model": BASE, "messages": HELLO, "stream": True, "stream_options": {"include_usage": True}}
    response = await http.post(f"{standin.url}/v1/chat/completions", json=body)
    assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
    payloads = sse_payloads(response.content)
    assert payloads[-1] == "[DONE]"
    chunks = [json.loads(p) for p in payloads[:-1]]
    for chunk in chunks:
        ChatCompletionChunk.model_validate(chunk)
        assert chunk["object"] == "chat.completion.chunk" and chunk["id"] == chunks[0]["id"]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    answer = standin.answer(BASE, "hello there")
    contents = [c["choices"][0]["delta"]["content"] for c in chunks[1:-1]]
    assert contents == tokenize(answer)
    assert [c["choices"][0]["finish_reason"] for c in chunks[1:-1]] == [None] * (len(contents) - 1) + ["stop"]
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == {
        "prompt_tokens": 2,
        "total_tokens": 2 + len(contents),
        "completion_tokens": len(contents),
    }
    without_usage = await http.post(f"{standin.url}/v1/chat/completions", json={**body, "stream_options": None})
    assert all('"usage"' not in p for p in sse_payloads(without_usage.content))


async def test_max_tokens_and_usage_count_the_simple_tokenisation(standin, http):
    messages = [{"role": "system", "content": "Be short."}, *HELLO]
    body = (
        await http.post(
            f"{standin.url}/v1/chat/completions", json={"model": "my-adapter", "messages": messages, "max_tokens": 4}
        )
    ).json()
    assert body["choices"][0]["message"]["content"] == "[adapter my-adapter] This is "
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"] == {
        "prompt_tokens": 4,
        "completion_tokens": 4,
        "total_tokens": 8,
        "prompt_tokens_details": None,
    }


async def test_validation_errors_are_worded_like_vllm(standin, http):
    url = f"{standin.url}/v1/chat/completions"
    no_messages = await http.post(url, json={"model": BASE})
    no_model = await http.post(url, json={"messages": HELLO})
    unknown = await http.post(url, json={"model": "x", "messages": HELLO})
    options_without_stream = await http.post(
        url, json={"model": BASE, "messages": HELLO, "stream_options": {"include_usage": True}}
    )
    not_json = await http.post(url, content=b"{", headers={"content-type": "application/json"})
    for response, field in ((no_messages, "messages"), (no_model, "model")):
        assert response.status_code == 400
        error = response.json()["error"]
        assert (error["type"], error["code"], error["param"]) == ("Bad Request", 400, None)
        assert f"'loc': ('body', '{field}'), 'msg': 'Field required'" in error["message"]
    assert (unknown.status_code, unknown.json()) == (
        404,
        {"error": {"message": "The model `x` does not exist.", "type": "NotFoundError", "param": None, "code": 404}},
    )
    assert options_without_stream.json()["error"]["message"] == "Stream options can only be defined when `stream=True`."
    assert not_json.status_code == 400
    assert (await http.get(f"{standin.url}/v1/nothing")).json() == {"detail": "Not Found"}
    assert (await http.get(url)).status_code == 405
    health = await http.get(f"{standin.url}/health")
    assert (health.status_code, health.content) == (200, b"")


async def test_transformers_runtime_stream_has_usage_on_the_final_chunk_and_no_done(http):
    async with ModelStandin(runtime="transformers") as server:
        url = f"{server.url}/v1/chat/completions"
        refused = await http.post(
            url, json={"model": BASE, "messages": HELLO, "stream": True, "stream_options": {"include_usage": True}}
        )
        streamed = await http.post(url, json={"model": BASE, "messages": HELLO, "stream": True, "max_tokens": 3})
    assert (refused.status_code, refused.json()) == (
        422,
        {"detail": "Unsupported fields in the request: {'stream_options'}"},
    )
    payloads = sse_payloads(streamed.content)
    assert "[DONE]" not in payloads
    final = json.loads(payloads[-1])
    assert final["choices"][0]["finish_reason"] == "length"
    assert final["usage"] == {"prompt_tokens": 2, "total_tokens": 5, "completion_tokens": 3}


async def test_reasoning_content_in_non_streamed_answers(http):
    async with ModelStandin(reasoning=True) as server:
        body = (await http.post(f"{server.url}/v1/chat/completions", json={"model": BASE, "messages": HELLO})).json()
        message = body["choices"][0]["message"]
        assert message["reasoning_content"] == server.reasoning_text("hello there")
        assert message["content"] == server.answer(BASE, "hello there")


async def test_same_prompt_same_tokens(standin, http):
    request = {"model": BASE, "messages": [{"role": "user", "content": "Tell me about KAITO"}]}
    first, second = [(await http.post(f"{standin.url}/v1/chat/completions", json=request)).json() for _ in range(2)]
    assert first["choices"][0]["message"] == second["choices"][0]["message"]
    assert 'You said: "Tell me about KAITO".' in first["choices"][0]["message"]["content"]


# ---- legacy details ------------------------------------------------------------------------------


async def test_legacy_generation_limits_work_like_transformers(http):
    async with ModelStandin(protocol="legacy") as server:
        url = f"{server.url}/chat"
        answer = tokenize(server.answer(BASE, "one two three"))
        full = (await http.post(url, json={"prompt": "one two three"})).json()["Result"]
        short = (
            await http.post(
                url, json={"prompt": "one two three", "return_full_text": False, "generate_kwargs": {"max_length": 8}}
            )
        ).json()
        new = (
            await http.post(
                url,
                json={
                    "prompt": "one two three",
                    "return_full_text": False,
                    "generate_kwargs": {"max_length": 8, "max_new_tokens": 2},
                },
            )
        ).json()
        wrong_type = await http.post(url, json={"prompt": 3})
        v1 = await http.get(f"{server.url}/v1/models")
        health = await http.get(f"{server.url}/health")
    assert full == "one two three" + "".join(answer)  # return_full_text defaults to true
    assert short == {"Result": "".join(answer[:5])}  # max_length 8 includes the 3 prompt tokens
    assert new == {"Result": "".join(answer[:2])}  # max_new_tokens wins
    assert wrong_type.status_code == 422 and wrong_type.json()["detail"][0]["loc"] == ["body", "prompt"]
    assert (v1.status_code, v1.json()) == (404, {"detail": "Not Found"})
    assert health.json() == {"status": "Healthy"}


# ---- faults and counters -------------------------------------------------------------------------


async def test_faults_through_the_control_endpoint(standin, http):
    url, chat_url = f"{standin.url}/_standin/faults", f"{standin.url}/v1/chat/completions"
    request = {"model": BASE, "messages": HELLO}
    assert (await http.post(url, json={"mode": "429", "count": 2})).status_code == 201
    statuses = [(await http.post(chat_url, json=request)) for _ in range(3)]
    assert [r.status_code for r in statuses] == [429, 429, 200]
    assert statuses[0].json() == KAITO_429
    assert (await http.post(url, json={"mode": "nope"})).status_code == 400
    await http.post(url, json={"mode": "503", "count": None, "paths": ["/v1/models"]})
    assert [(await http.get(f"{standin.url}/v1/models")).status_code for _ in range(3)] == [503, 503, 503]
    assert (await http.get(f"{standin.url}/health")).status_code == 200  # other paths are untouched
    assert [f["mode"] for f in (await http.get(url)).json()["faults"]] == ["503"]
    assert (await http.delete(url)).status_code == 204
    assert (await http.get(f"{standin.url}/v1/models")).status_code == 200
    stats = (await http.get(f"{standin.url}/_standin/stats")).json()
    assert stats["faults_applied"] == {"429": 2, "503": 3}
    assert stats["requests"]["POST /v1/chat/completions"] == 3
    assert "GET /_standin/stats" not in stats["requests"]
    reset = (await http.post(f"{standin.url}/_standin/reset")).json()
    assert (reset["requests_total"], reset["faults_applied"]) == (0, {})


async def test_cut_closes_the_connection_without_done(standin, http):
    standin.add_fault("cut", after_tokens=2)
    received = b""
    with pytest.raises(httpx.RemoteProtocolError):
        async with http.stream(
            "POST", f"{standin.url}/v1/chat/completions", json={"model": BASE, "messages": HELLO, "stream": True}
        ) as response:
            async for chunk in response.aiter_bytes():
                received += chunk
    assert b"[DONE]" not in received and b'"finish_reason":"stop"' not in received
    contents = [json.loads(p)["choices"][0]["delta"].get("content") for p in sse_payloads(received)]
    assert contents == ["", "This ", "is "]
    stats = standin.stats()
    assert (stats["streams_cut"], stats["open_streams"]) == (1, 0)


async def test_token_delay_and_slow_first_token(standin, http):
    body = {"model": BASE, "messages": HELLO, "stream": True, "max_tokens": 5}
    standin.token_delay = 0.05
    started = time.monotonic()
    await http.post(f"{standin.url}/v1/chat/completions", json=body)
    assert time.monotonic() - started >= 0.25
    await http.post(f"{standin.url}/_standin/config", json={"token_delay": 0})
    standin.add_fault("slow_first_token", delay=0.4)
    started = time.monotonic()
    await http.post(f"{standin.url}/v1/chat/completions", json=body)
    assert 0.4 <= time.monotonic() - started < 2


async def test_queue_limiter_like_kaito(http):
    async with ModelStandin(max_num_seqs=2, token_delay=0.05) as server:
        body = {"model": BASE, "messages": HELLO, "stream": True}
        # 2 run, 3 wait: the 5th still gets in (waiting 2 does not exceed 2), the 6th is refused.
        running = [asyncio.create_task(http.post(f"{server.url}/v1/chat/completions", json=body)) for _ in range(5)]
        deadline = time.monotonic() + 3
        while server.stats()["open_streams"] < 5 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert server.stats()["open_streams"] == 5
        limited = await http.post(f"{server.url}/v1/chat/completions", json=body)
        models = await http.get(f"{server.url}/v1/models")  # never limited
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)
    assert limited.status_code == 429
    assert limited.json()["error"]["message"] == "Too many requests: waiting queue (3) exceeds max-num-seqs (2)."
    assert models.status_code == 200


async def test_hundreds_of_concurrent_streams():
    async with ModelStandin(token_delay=0.01) as server:
        # aiohttp as the client: httpx's pool rescans every connection per request, which would dominate.
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=400)) as session:

            async def one(i):
                body = {"model": BASE, "messages": [{"role": "user", "content": f"n{i}"}], "stream": True}
                async with session.post(f"{server.url}/v1/chat/completions", json=body) as response:
                    payloads = sse_payloads(await response.read())
                text = "".join(json.loads(p)["choices"][0]["delta"].get("content") or "" for p in payloads[:-1])
                return payloads[-1] == "[DONE]" and text == server.answer(BASE, f"n{i}")

            started = time.monotonic()
            results = await asyncio.gather(*(one(i) for i in range(300)))
            elapsed = time.monotonic() - started
        stats = server.stats()
    assert all(results)
    assert (stats["streams_started"], stats["streams_completed"], stats["open_streams"]) == (300, 300, 0)
    assert elapsed < 10  # ~35 tokens x 10 ms when they overlap; one after another it would take 100 s


# ---- ways to run it ------------------------------------------------------------------------------


def test_runs_in_a_thread_for_synchronous_callers():
    with ModelStandin(protocol="legacy", token_delay=0) as server:
        url = server.url
        assert httpx.get(f"{url}/").json() == {"message": "Server is running"}
        server.add_fault("500")
        assert httpx.post(f"{url}/chat", json={"prompt": "x"}).status_code == 500
        assert server.stats()["faults_applied"] == {"500": 1}
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/")


def test_cli_process_prints_its_url_and_stops_on_sigterm():
    repo = Path(__file__).resolve().parents[2]
    command = [sys.executable, "-m", "devcluster.model_standin", "--port", "0", "--protocol", "openai",
               "--model", "phi-3-mini-128k-instruct", "--adapter", "my-adapter", "--token-delay", "0"]  # fmt: skip
    process = subprocess.Popen(
        command, cwd=repo, stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"}
    )
    try:
        line = process.stdout.readline().strip()
        assert line.startswith(
            "KAITO model stand-in (openai) for phi-3-mini-128k-instruct listening on http://127.0.0.1:"
        )
        url = line.rsplit(" ", 1)[1]
        assert [m["id"] for m in httpx.get(f"{url}/v1/models").json()["data"]] == [BASE, "my-adapter"]
        assert httpx.post(f"{url}/_standin/faults", json={"mode": "429"}).status_code == 201
        limited = httpx.post(f"{url}/v1/chat/completions", json={"model": BASE, "messages": HELLO})
        assert (limited.status_code, limited.json()) == (429, KAITO_429)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stdout.close()
