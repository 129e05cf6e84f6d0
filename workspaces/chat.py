"""Async client for the model behind a KAITO Workspace: OpenAI-compatible streaming or legacy /chat."""

from __future__ import annotations

import asyncio
import json
import re
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx

from workspaces.chat_formats import (
    SSEError,
    SSEParser,
    legacy_as_openai,
    legacy_request_body,
    openai_error,
    server_message,
)

Protocol = Literal["openai", "legacy"]
# unreachable: refused/DNS; timeout: no connection, or silence for read_timeout; not_found: 404;
# not_ready: 503 or nothing served yet; rate_limited: 429; rejected: other 4xx; upstream_error: 5xx or
# an error inside the stream; stream_cut: ended before the answer was complete; bad_response: not the protocol.
ErrorKind = Literal[
    "unreachable", "timeout", "not_found", "not_ready", "rate_limited", "rejected", "upstream_error",
    "stream_cut", "bad_response",
]  # fmt: skip
ChatMessage = Mapping[str, Any]  # {"role": "user", "content": "..."} as in the OpenAI API

CHAT_PATH = "/v1/chat/completions"
_ERROR_BODY_LIMIT = 64 * 1024
_RELAYED_HEADERS = ("content-type", "cache-control", "retry-after", "x-request-id")
# Relayed paths stay below /v1 of the model: through the API-server service proxy a `..` would
# otherwise reach other API-server URLs with the portal's credentials.
_RELAY_PATH = re.compile(r"/v1(/[A-Za-z0-9_\-]+)+")
_KIND_HTTP_STATUS = {"unreachable": 502, "timeout": 504, "not_found": 404, "not_ready": 503}


@dataclass(frozen=True)
class Endpoint:
    """Where the model answers and how to reach it; timeouts are per connect and per read (between tokens)."""

    base_url: str  # http://ws.ns.svc.cluster.local:80, https://apiserver/api/v1/namespaces/ns/services/ws:80/proxy
    headers: Mapping[str, str] = field(default_factory=dict, repr=False, hash=False)  # may hold a bearer token
    verify: bool | str | ssl.SSLContext = True  # a str is a CA bundle path
    cert: tuple[str, str] | None = None  # client certificate and key files (kubeconfig client-certificate auth)
    connect_timeout: float = 5.0
    read_timeout: float = 60.0

    def url(self, path: str) -> str:
        return self.base_url.rstrip("/") + path

    def timeout(self) -> httpx.Timeout:
        return httpx.Timeout(
            connect=self.connect_timeout, read=self.read_timeout, write=self.read_timeout, pool=self.connect_timeout
        )


@dataclass(frozen=True)
class TextDelta:
    text: str


@dataclass(frozen=True)
class ReasoningDelta:
    text: str  # reasoning models (vLLM --reasoning-parser) think aloud before answering; not the answer


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int | None
    completion_tokens: int | None
    total_tokens: int | None


@dataclass(frozen=True)
class Finished:
    finish_reason: str | None  # "stop", "length", ...; None when the server does not say (legacy /chat)
    usage: Usage | None  # None when the server did not count
    streamed: bool  # False for legacy /chat: no streaming exists there, the answer came as one TextDelta


ChatEvent = TextDelta | ReasoningDelta | Finished


@dataclass(frozen=True)
class ModelInfo:
    id: str
    owned_by: str | None = None  # "vllm" for vLLM, "kaito" for the Transformers runtime
    root: str | None = None
    parent: str | None = None  # the base model's id when this id is a LoRA adapter
    max_model_len: int | None = None

    @property
    def is_adapter(self) -> bool:
        return bool(self.parent) and self.parent != self.id


@dataclass(frozen=True)
class Detection:
    protocol: Protocol
    models: tuple[ModelInfo, ...] = ()  # empty for legacy: that API has no model names


class ChatError(Exception):
    """Every failure talking to the model. `message` can be shown to users; it never pretends to be an answer."""

    def __init__(
        self,
        kind: ErrorKind,
        message: str,
        *,
        status: int | None = None,
        model: str | None = None,
        partial_text: str = "",
    ) -> None:
        super().__init__(message)
        self.kind, self.message, self.status, self.model = kind, message, status, model
        self.partial_text = partial_text  # what arrived before a cut or timeout: incomplete, show it as such

    @property
    def http_status(self) -> int:
        """What a relaying endpoint should answer its own client."""
        if self.status and 400 <= self.status < 600:
            return self.status
        return _KIND_HTTP_STATUS.get(self.kind, 502)

    def openai_error(self) -> dict[str, Any]:
        return openai_error(self.message, self.kind, self.http_status)


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


def _status_error(status: int, body: bytes, endpoint: Endpoint, *, model: str | None = None) -> ChatError:
    said = server_message(body)
    kind: ErrorKind
    if status == 404:
        what = f"The model `{model}` was not found" if model else "The inference endpoint was not found"
        kind, summary = "not_found", f"{what} at {endpoint.base_url}"
    elif status == 429:
        kind, summary = "rate_limited", "The model is busy, try again in a moment"
    elif status == 503:
        kind, summary = "not_ready", "The model server is not ready"
    elif 400 <= status < 500:
        kind, summary = "rejected", "The model server refused the request"
    else:
        kind, summary = "upstream_error", "The model server failed"
    message = f"{summary} (HTTP {status})." + (f" The server says: {said}" if said else "")
    return ChatError(kind, message, status=status, model=model)


def _reason(exc: BaseException) -> str:
    """The most telling words in the exception chain (httpx's own text is often empty)."""
    seen: BaseException | None = exc
    while seen is not None:
        if str(seen):
            return str(seen)
        seen = seen.__cause__ or seen.__context__
    return type(exc).__name__


def _transport_error(
    exc: httpx.HTTPError, endpoint: Endpoint, *, model: str | None = None, started: bool = False, partial: str = ""
) -> ChatError:
    where = endpoint.base_url
    incomplete = " The answer so far is incomplete." if started else ""
    if isinstance(exc, httpx.ConnectTimeout):
        return ChatError(
            "timeout", f"No connection to the model server at {where} within {endpoint.connect_timeout:g} s."
        )
    if isinstance(exc, httpx.PoolTimeout):
        return ChatError("timeout", f"All connections to the model server at {where} stayed busy.")
    if isinstance(exc, httpx.TimeoutException):
        message = f"The model server at {where} sent nothing for {endpoint.read_timeout:g} s.{incomplete}"
        return ChatError("timeout", message, model=model, partial_text=partial)
    if isinstance(exc, httpx.ConnectError):
        return ChatError("unreachable", f"Cannot reach the model server at {where}: {_reason(exc)}.")
    if started:
        message = f"The model server at {where} closed the connection mid-answer.{incomplete}"
        return ChatError("stream_cut", message, model=model, partial_text=partial)
    message = f"The model server at {where} closed the connection without answering: {_reason(exc)}."
    return ChatError("upstream_error", message, model=model)


async def _send(
    http: httpx.AsyncClient, endpoint: Endpoint, method: str, path: str, body: Any = None
) -> httpx.Response:
    """One whole (non-streamed) exchange; transport failures become ChatError."""
    try:
        return await http.send(_request(http, endpoint, method, path, body))
    except httpx.HTTPError as exc:
        raise _transport_error(exc, endpoint) from exc


def _json_object(raw: bytes | str, what: str) -> dict[str, Any]:
    try:
        data = json.loads(raw)
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise ChatError("bad_response", f"The model server sent something that is not {what}.")
    return data


def _parse_models(response: httpx.Response) -> tuple[ModelInfo, ...]:
    entries = _json_object(response.content, "a model list").get("data")
    if not isinstance(entries, list) or not all(isinstance(e, dict) and isinstance(e.get("id"), str) for e in entries):
        raise ChatError("bad_response", "The model server's /v1/models answer has no model ids.")
    keys = ("id", "owned_by", "root", "parent", "max_model_len")
    return tuple(ModelInfo(**{k: e.get(k) for k in keys}) for e in entries)


async def list_models(endpoint: Endpoint, *, client: httpx.AsyncClient | None = None) -> tuple[ModelInfo, ...]:
    """The OpenAI-compatible server's model ids: the base model and one per LoRA adapter."""
    async with _client_for(endpoint, client) as http:
        response = await _send(http, endpoint, "GET", "/v1/models")
        if response.status_code != 200:
            raise _status_error(response.status_code, response.content, endpoint)
        return _parse_models(response)


async def detect_protocol(endpoint: Endpoint, *, client: httpx.AsyncClient | None = None) -> Detection:
    """Ask the server which API it speaks; the caller stores the answer and passes it to later calls."""
    async with _client_for(endpoint, client) as http:
        response = await _send(http, endpoint, "GET", "/v1/models")
        if response.status_code == 200:
            return Detection("openai", _parse_models(response))
        # A Kubernetes Status 404 is the API-server proxy saying the Service does not exist.
        if response.status_code != 404 or '"kind":"Status"' in response.text.replace(" ", ""):
            raise _status_error(response.status_code, response.content, endpoint)
        # KAITO <= 0.8 has no /v1 routes; its home page (or at least /health) shows the legacy server runs.
        home = await _send(http, endpoint, "GET", "/")
        if home.status_code == 200 and server_message(home.content) == "Server is running":
            return Detection("legacy")
        health = await _send(http, endpoint, "GET", "/health")
        if health.status_code == 200:
            return Detection("legacy")
        if health.status_code not in (404, 500):
            raise _status_error(health.status_code, health.content, endpoint)
        # KAITO's vLLM serves only /metrics while it downloads weights; legacy /health says 500 until loaded.
        said = server_message(health.content) or server_message(response.content)
        message = f"The model server answers but is not serving the model yet. The server says: {said}"
        raise ChatError("not_ready", message, status=health.status_code)


async def _legacy_answer(http: httpx.AsyncClient, endpoint: Endpoint, body: dict[str, Any]) -> str:
    response = await _send(http, endpoint, "POST", "/chat", body)
    if response.status_code != 200:
        raise _status_error(response.status_code, response.content, endpoint)
    result = _json_object(response.content, "a /chat answer").get("Result")
    if not isinstance(result, str):
        raise ChatError("bad_response", "The model server's /chat answer has no Result text.")
    return result


class _StreamOptionsRefused(Exception):
    """The Transformers runtime (KAITO >= 0.9) rejects stream_options with 422; it sends usage anyway."""


def _usage(data: Any) -> Usage | None:
    if not isinstance(data, dict):
        return None
    return Usage(data.get("prompt_tokens"), data.get("completion_tokens"), data.get("total_tokens"))


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
                raise _status_error(response.status_code, raw[:_ERROR_BODY_LIMIT], endpoint, model=model)
            started = True
            parser = SSEParser()
            async for chunk in response.aiter_bytes():
                for event in parser.feed(chunk):
                    if event.data.strip() == "[DONE]":
                        done = True
                        break
                    payload = _json_object(event.data, "a chat.completion.chunk")
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
                    usage = _usage(payload.get("usage")) or usage
                if done:
                    break
    except httpx.HTTPError as exc:
        raise _transport_error(exc, endpoint, model=model, started=started, partial="".join(parts)) from exc
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
        self._closing: set[object] = set()  # keeps close() tasks alive until they ran

    def __aiter__(self) -> RelayBody:
        return self

    async def __anext__(self) -> bytes:
        try:
            return await self._chunks.__anext__()
        except httpx.HTTPError as exc:
            await self._close()
            raise _transport_error(exc, self._endpoint, started=True) from exc
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
            raise _transport_error(exc, endpoint) from exc
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


def _param(body: Mapping[str, Any], key: str) -> Any:
    value = body.get(key)
    if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
        raise ValueError(f"{key} must be a number")
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
        params = {key: _param(body, key) for key in ("temperature", "top_p", "max_tokens")}
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
