"""Async client for the model behind a KAITO Workspace: OpenAI-compatible streaming or legacy /chat."""

from __future__ import annotations

import asyncio
import json
import re
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx

from workspaces.chat_formats import (
    ChatError,
    ChatEvent,
    ChatMessage,
    Detection,
    Endpoint,
    ErrorKind,
    Finished,
    ModelInfo,
    Protocol,
    ReasoningDelta,
    SSEError,
    SSEParser,
    TextDelta,
    Usage,
    json_object,
    legacy_as_openai,
    legacy_request_body,
    openai_error,
    parse_models,
    render_prompt,
    server_message,
    status_error,
    transport_error,
    usage_from,
)

# The public API; the types live in chat_formats (no I/O) and are used from here.
__all__ = [
    "CHAT_PATH", "ChatError", "ChatEvent", "ChatMessage", "Detection", "Endpoint", "ErrorKind", "Finished",
    "ModelInfo", "Protocol", "ReasoningDelta", "RelayBody", "TextDelta", "UpstreamResponse", "Usage",
    "detect_protocol", "legacy_request_body", "list_models", "make_client", "open_upstream", "render_prompt",
    "stream_chat",
]  # fmt: skip

CHAT_PATH = "/v1/chat/completions"
_ERROR_BODY_LIMIT = 64 * 1024
_RELAYED_HEADERS = ("content-type", "cache-control", "retry-after", "x-request-id")
# Relayed paths stay below /v1 of the model: through the API-server service proxy a `..` would
# otherwise reach other API-server URLs with the portal's credentials.
_RELAY_PATH = re.compile(r"/v1(/[A-Za-z0-9_\-]+)+")


def make_client(endpoint: Endpoint, *, max_connections: int = 100) -> httpx.AsyncClient:
    """An AsyncClient with the endpoint's TLS settings; share one per endpoint for connection reuse."""
    if isinstance(endpoint.verify, ssl.SSLContext):
        ctx = endpoint.verify
    elif isinstance(endpoint.verify, str):
        ctx = ssl.create_default_context(cafile=endpoint.verify)
    elif endpoint.base_url.startswith("https:") or endpoint.cert:
        ctx = httpx.create_ssl_context(verify=endpoint.verify, trust_env=False)
    else:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # never used for plain http; skips loading the CA bundle
    if endpoint.cert:
        ctx.load_cert_chain(*endpoint.cert)
    # trust_env=False: the Endpoint says everything; an HTTP(S)_PROXY meant for the internet must not
    # capture cluster-internal traffic.
    limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=20)
    return httpx.AsyncClient(verify=ctx, timeout=endpoint.timeout(), trust_env=False, limits=limits)


@asynccontextmanager
async def _client_for(endpoint: Endpoint, client: httpx.AsyncClient | None) -> AsyncIterator[httpx.AsyncClient]:
    if client is not None:
        yield client
        return
    owned = make_client(endpoint)
    try:
        yield owned
    finally:
        await owned.aclose()


def _request(http: httpx.AsyncClient, endpoint: Endpoint, method: str, path: str, body: Any = None) -> httpx.Request:
    # identity: relayed bytes must be what the client may read as is, and SSE must not sit in a decompressor
    headers = {"accept": "application/json", "accept-encoding": "identity", **endpoint.headers}
    return http.build_request(method, endpoint.url(path), json=body, headers=headers, timeout=endpoint.timeout())


@asynccontextmanager
async def _streamed(
    http: httpx.AsyncClient, endpoint: Endpoint, method: str, path: str, body: Any = None
) -> AsyncIterator[httpx.Response]:
    response = await http.send(_request(http, endpoint, method, path, body), stream=True)
    try:
        yield response
    finally:
        await response.aclose()


async def _send(
    http: httpx.AsyncClient, endpoint: Endpoint, method: str, path: str, body: Any = None
) -> httpx.Response:
    """One whole (non-streamed) exchange; transport failures become ChatError."""
    try:
        return await http.send(_request(http, endpoint, method, path, body))
    except httpx.HTTPError as exc:
        raise transport_error(exc, endpoint) from exc


async def list_models(endpoint: Endpoint, *, client: httpx.AsyncClient | None = None) -> tuple[ModelInfo, ...]:
    """The OpenAI-compatible server's model ids: the base model and one per LoRA adapter."""
    async with _client_for(endpoint, client) as http:
        response = await _send(http, endpoint, "GET", "/v1/models")
        if response.status_code != 200:
            raise status_error(response.status_code, response.content, endpoint)
        return parse_models(response.content)


async def detect_protocol(endpoint: Endpoint, *, client: httpx.AsyncClient | None = None) -> Detection:
    """Ask the server which API it speaks; the caller stores the answer and passes it to later calls."""
    async with _client_for(endpoint, client) as http:
        response = await _send(http, endpoint, "GET", "/v1/models")
        if response.status_code == 200:
            return Detection("openai", parse_models(response.content))
        # A Kubernetes Status 404 is the API-server proxy saying the Service does not exist.
        if response.status_code != 404 or '"kind":"Status"' in response.text.replace(" ", ""):
            raise status_error(response.status_code, response.content, endpoint)
        # KAITO <= 0.8 has no /v1 routes; its home page (or at least /health) shows the legacy server runs.
        home = await _send(http, endpoint, "GET", "/")
        if home.status_code == 200 and server_message(home.content) == "Server is running":
            return Detection("legacy")
        health = await _send(http, endpoint, "GET", "/health")
        if health.status_code == 200:
            return Detection("legacy")
        if health.status_code not in (404, 500):
            raise status_error(health.status_code, health.content, endpoint)
        # KAITO's vLLM serves only /metrics while it downloads weights; legacy /health says 500 until loaded.
        said = server_message(health.content) or server_message(response.content)
        message = f"The model server answers but is not serving the model yet. The server says: {said}"
        raise ChatError("not_ready", message, status=health.status_code)


async def _legacy_answer(http: httpx.AsyncClient, endpoint: Endpoint, body: dict[str, Any]) -> str:
    response = await _send(http, endpoint, "POST", "/chat", body)
    if response.status_code != 200:
        raise status_error(response.status_code, response.content, endpoint)
    result = json_object(response.content, "a /chat answer").get("Result")
    if not isinstance(result, str):
        raise ChatError("bad_response", "The model server's /chat answer has no Result text.")
    return result


class _StreamOptionsRefused(Exception):
    """The Transformers runtime (KAITO >= 0.9) rejects stream_options with 422; it sends usage anyway."""


async def _openai_events(
    http: httpx.AsyncClient, endpoint: Endpoint, body: dict[str, Any], model: str
) -> AsyncIterator[ChatEvent]:
    parts: list[str] = []
    started = done = False
    finish_reason: str | None = None
    usage: Usage | None = None
    try:
        async with _streamed(http, endpoint, "POST", CHAT_PATH, body) as response:
            if response.status_code != 200:
                raw = b""
                async for chunk in response.aiter_bytes():
                    raw += chunk
                    if len(raw) > _ERROR_BODY_LIMIT:
                        break
                if response.status_code in (400, 422) and "stream_options" in body and b"stream_options" in raw:
                    raise _StreamOptionsRefused
                raise status_error(response.status_code, raw[:_ERROR_BODY_LIMIT], endpoint, model=model)
            started = True
            if not response.headers.get("content-type", "").startswith("text/event-stream"):
                # A whole answer instead of a stream; the Transformers runtime sends `{}` when the
                # conversation ends with an assistant message.
                answer = json_object(await response.aread(), "a chat completion")
                choice = (answer.get("choices") or [{}])[0]
                if not isinstance(content := (choice.get("message") or {}).get("content"), str):
                    raise ChatError("bad_response", "The model server answered without a message.", model=model)
                yield TextDelta(content)
                yield Finished(choice.get("finish_reason"), usage_from(answer.get("usage")), streamed=False)
                return
            parser = SSEParser()
            async for chunk in response.aiter_bytes():
                for event in parser.feed(chunk):
                    if event.data.strip() == "[DONE]":
                        done = True
                        break
                    payload = json_object(event.data, "a chat.completion.chunk")
                    if error := payload.get("error") or (payload if payload.get("object") == "error" else None):
                        # vLLM and transformers report a failure inside the 200 stream.
                        said = server_message(json.dumps({"error": error}).encode())
                        message = f"The model failed mid-answer. The server says: {said}"
                        raise ChatError("upstream_error", message, model=model, partial_text="".join(parts))
                    for choice in payload.get("choices") or ():
                        delta = choice.get("delta") or {}
                        if reasoning := delta.get("reasoning_content") or delta.get("reasoning"):
                            yield ReasoningDelta(reasoning)
                        if content := delta.get("content"):
                            parts.append(content)
                            yield TextDelta(content)
                        finish_reason = choice.get("finish_reason") or finish_reason
                    usage = usage_from(payload.get("usage")) or usage
                if done:
                    break
    except httpx.HTTPError as exc:
        raise transport_error(exc, endpoint, model=model, started=started, partial="".join(parts)) from exc
    except SSEError as exc:
        raise ChatError("bad_response", f"The model server's stream is not an event stream: {exc}.") from exc
    if not done and finish_reason is None:
        message = "The model server ended the stream before the answer was complete; the text so far is incomplete."
        raise ChatError("stream_cut", message, model=model, partial_text="".join(parts))
    yield Finished(finish_reason, usage, streamed=True)


async def stream_chat(
    endpoint: Endpoint,
    *,
    protocol: Protocol | None,
    model: str,
    messages: Sequence[ChatMessage],
    temperature: float | None = None,
    top_p: float | None = None,
    max_tokens: int | None = None,
    client: httpx.AsyncClient | None = None,
) -> AsyncIterator[ChatEvent]:
    """Yield the answer as TextDelta/ReasoningDelta events, then one Finished; raise ChatError on failure.

    protocol=None detects it first (one more round trip). Iterate inside `contextlib.aclosing(...)` so that
    stopping early closes the upstream connection at once, not when the generator is garbage-collected.
    """
    async with _client_for(endpoint, client) as http:
        if protocol is None:
            protocol = (await detect_protocol(endpoint, client=http)).protocol
        if protocol == "legacy":
            body = legacy_request_body(messages, temperature=temperature, top_p=top_p, max_tokens=max_tokens)
            yield TextDelta(await _legacy_answer(http, endpoint, body))
            yield Finished(finish_reason=None, usage=None, streamed=False)
            return
        body = {"model": model, "messages": list(messages), "stream": True, "stream_options": {"include_usage": True}}
        optional = {"temperature": temperature, "top_p": top_p, "max_tokens": max_tokens}
        body.update({k: v for k, v in optional.items() if v is not None})
        for attempt in (body, {k: v for k, v in body.items() if k != "stream_options"}):
            try:
                async with aclosing(_openai_events(http, endpoint, attempt, model)) as events:
                    async for event in events:
                        yield event
                return
            except _StreamOptionsRefused:
                continue


async def _nothing() -> None:
    return None


class RelayBody:
    """The upstream body as an async byte iterator. Its end, an error, a cancellation while waiting for
    bytes, `aclose()` and `close()` each close the upstream connection; closing twice is harmless."""

    def __init__(self, chunks: AsyncIterator[bytes], close: Callable[[], Awaitable[None]], endpoint: Endpoint) -> None:
        self._chunks, self._close, self._endpoint = chunks, close, endpoint
        self._loop = asyncio.get_running_loop()
        self._closing: set[asyncio.Task[None]] = set()  # keeps close() tasks alive until they ran

    def __aiter__(self) -> RelayBody:
        return self

    async def __anext__(self) -> bytes:
        try:
            return await self._chunks.__anext__()
        except httpx.HTTPError as exc:
            await self._close()
            raise transport_error(exc, self._endpoint, started=True) from exc
        except BaseException:  # StopAsyncIteration, CancelledError (the caller's client went away) ...
            await self._close()
            raise

    async def aclose(self) -> None:
        await self._close()

    def close(self) -> None:
        """For Django's StreamingHttpResponse, which calls close() from a worker thread when done or aborted."""
        try:
            in_loop = asyncio.get_running_loop() is self._loop
        except RuntimeError:
            in_loop = False
        if in_loop:
            task = self._loop.create_task(self._close())
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)
        elif not self._loop.is_closed():
            asyncio.run_coroutine_threadsafe(self._close(), self._loop)


@dataclass
class UpstreamResponse:
    """An upstream answer to relay unchanged: `async with` it (or aclose() in a finally) so that a caller
    cancelled while writing to its own client still closes the upstream."""

    status: int
    headers: dict[str, str]
    body: RelayBody

    async def aclose(self) -> None:
        await self.body.aclose()

    async def __aenter__(self) -> UpstreamResponse:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


async def _once(payload: bytes) -> AsyncIterator[bytes]:
    yield payload


def _canned(
    status: int, payload: bytes, endpoint: Endpoint, content_type: str = "application/json"
) -> UpstreamResponse:
    return UpstreamResponse(status, {"content-type": content_type}, RelayBody(_once(payload), _nothing, endpoint))


async def open_upstream(
    endpoint: Endpoint,
    method: str,
    path: str,
    json_body: Any = None,
    *,
    protocol: Protocol = "openai",
    client: httpx.AsyncClient | None = None,
    served_model: str | None = None,
) -> UpstreamResponse:
    """Send one OpenAI-API request to the model and hand back its answer to relay byte for byte.

    Upstream HTTP errors come back as responses (relay them); no answer at all raises ChatError. For a
    legacy server, POST /v1/chat/completions is translated (streamed or not) and GET /v1/models lists
    `served_model`.
    """
    if method not in ("GET", "POST") or not _RELAY_PATH.fullmatch(path):
        raise ChatError("not_found", f"{method} {path} is not relayed to the model.", status=404)
    if protocol == "legacy":
        return await _legacy_upstream(endpoint, method, path, json_body, client=client, served_model=served_model)
    http = client or make_client(endpoint)
    try:
        response = await http.send(_request(http, endpoint, method, path, json_body), stream=True)
    except BaseException as exc:
        if client is None:
            await http.aclose()
        if isinstance(exc, httpx.HTTPError):
            raise transport_error(exc, endpoint) from exc
        raise

    closed = False

    async def close() -> None:
        nonlocal closed
        if not closed:
            closed = True
            try:
                await response.aclose()
            finally:
                if client is None:
                    await http.aclose()

    relayed = {name: response.headers[name] for name in _RELAYED_HEADERS if name in response.headers}
    return UpstreamResponse(response.status_code, relayed, RelayBody(response.aiter_raw(), close, endpoint))


def _param(body: Mapping[str, Any], key: str, kind: type | tuple[type, ...]) -> Any:
    value = body.get(key)
    if value is not None and (isinstance(value, bool) or not isinstance(value, kind)):
        raise ValueError(f"{key} must be {'an integer' if kind is int else 'a number'}")
    return value


async def _legacy_upstream(
    endpoint: Endpoint, method: str, path: str, body: Any, *, client: httpx.AsyncClient | None, served_model: str | None
) -> UpstreamResponse:
    def error(status: int, message: str, kind: str) -> UpstreamResponse:
        return _canned(status, json.dumps(openai_error(message, kind, status)).encode(), endpoint)

    if method == "GET" and path == "/v1/models" and served_model:
        model = {"id": served_model, "object": "model", "created": 0, "owned_by": "kaito"}
        return _canned(200, json.dumps({"object": "list", "data": [model]}).encode(), endpoint)
    if (method, path) != ("POST", CHAT_PATH):
        return error(
            404, f"This workspace runs KAITO's legacy /chat API; only POST {CHAT_PATH} is translated.", "NotFoundError"
        )
    if not isinstance(body, dict) or not isinstance(body.get("messages"), list) or not body["messages"]:
        return error(400, "messages: Field required", "BadRequestError")
    try:
        number = (int, float)
        params = {"temperature": _param(body, "temperature", number), "top_p": _param(body, "top_p", number),
                  "max_tokens": _param(body, "max_tokens", int)}  # fmt: skip
    except ValueError as exc:
        return error(400, str(exc), "BadRequestError")
    async with _client_for(endpoint, client) as http:
        try:
            text = await _legacy_answer(http, endpoint, legacy_request_body(body["messages"], **params))
        except ChatError as err:
            if err.status is None:
                raise  # no HTTP answer to relay
            return error(err.status, err.message, err.kind)
    stream = bool(body.get("stream"))
    payload = legacy_as_openai(text, model=body.get("model") or served_model, stream=stream)
    return _canned(200, payload, endpoint, "text/event-stream" if stream else "application/json")
