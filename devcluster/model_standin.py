"""A stand-in for the model server behind a KAITO Workspace, for tests, benchmarks and the local sandbox.

It speaks the upstream protocols exactly (vLLM's / the Transformers runtime's OpenAI API, and the legacy
`POST /chat` of KAITO <= 0.8), answers deterministically, says it is a stand-in, and fails on demand.
Control endpoints live under /_standin/, which no real model server has:

    GET    /_standin/stats      request counts, open requests/streams/connections, how streams ended
    GET    /_standin/requests   the last 100 requests (method, path, headers, JSON body)
    POST   /_standin/faults     {"mode": "429", "count": 1, "delay": 2.0, "after_tokens": 3, "paths": [...]}
    GET    /_standin/faults     DELETE /_standin/faults   list / clear the queued faults
    POST   /_standin/config     {"token_delay": 0.05}
    POST   /_standin/reset      clear faults, counters and the request log

Fault modes: 429 (KAITO's rate-limit body), 500, 503, 404 (model not found), hang (read the request, never
answer), slow_first_token (`delay` s), stall (`after_tokens` tokens, then silence), cut (`after_tokens`
tokens, then close without [DONE]), stream_error (an error event inside the 200 stream). `count` null
keeps a fault until it is cleared; `paths` defaults to the generation endpoints. Being down: stop it.

Run it: python -m devcluster.model_standin --port 8001 --protocol openai --model phi-3-mini-128k-instruct \
    --adapter my-adapter --token-delay 0.02
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import re
import signal
import socket
import ssl
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from aiohttp import web

DEFAULT_MODEL = "phi-3-mini-128k-instruct"
GENERATION_PATHS = ("/v1/chat/completions", "/chat")
FAULT_MODES = ("429", "500", "503", "404", "hang", "slow_first_token", "stall", "cut", "stream_error")
StandinProtocol = Literal["openai", "legacy"]
Runtime = Literal["vllm", "transformers"]
# `transformers serve` (KAITO >= 0.9 Transformers runtime) answers 422 to these OpenAI fields.
TRANSFORMERS_UNSUPPORTED = {
    "audio", "function_call", "functions", "logprobs", "max_completion_tokens", "metadata", "modalities", "n",
    "parallel_tool_calls", "prediction", "presence_penalty", "reasoning_effort", "response_format",
    "service_tier", "store", "stream_options", "tool_choice", "top_logprobs", "user", "web_search_options",
}  # fmt: skip
_TOKEN = re.compile(r"\s*\S+\s*")
_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def tokenize(text: str) -> list[str]:
    """Words with their following whitespace: crude, but usage counts are honest about this tokenisation."""
    return _TOKEN.findall(text) or ([text] if text else [])


def _text(content: Any) -> str:
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return content if isinstance(content, str) else ""


def _dumps(data: Any) -> bytes:
    # Compact and non-ASCII kept raw, like vLLM's pydantic model_dump_json (U+2028 reaches clients unescaped).
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=_dumps(data), status=status, content_type="application/json")


def openai_error(message: str, kind: str, code: int | str, status: int) -> web.Response:
    return _json({"error": {"message": message, "type": kind, "param": None, "code": code}}, status)


def rate_limit_response(waiting: int, max_num_seqs: int) -> web.Response:
    """The body of KAITO's vLLM rate limiter (presets/workspace/inference/vllm/rate_limit.py)."""
    message = f"Too many requests: waiting queue ({waiting}) exceeds max-num-seqs ({max_num_seqs})."
    return openai_error(message, "requests", "rate_limit_exceeded", 429)


@dataclass
class Fault:
    mode: str
    count: int | None = 1  # how many matching requests it hits; None: until cleared
    delay: float = 5.0  # slow_first_token: seconds before the first token
    after_tokens: int = 3  # stall / cut / stream_error: content tokens sent first
    paths: tuple[str, ...] = GENERATION_PATHS
    waiting: int = 257  # 429: the numbers quoted in KAITO's message
    max_num_seqs: int = 256

    def __post_init__(self) -> None:
        if self.mode not in FAULT_MODES:
            raise ValueError(f"unknown fault mode {self.mode!r}; known: {', '.join(FAULT_MODES)}")
        self.paths = tuple(self.paths)


_FAULT = web.RequestKey("fault", Fault)


@dataclass
class _Stats:
    requests: collections.Counter[str] = field(default_factory=collections.Counter)
    faults_applied: collections.Counter[str] = field(default_factory=collections.Counter)
    open_requests: int = 0
    open_streams: int = 0
    streams_started: int = 0
    streams_completed: int = 0
    streams_disconnected: int = 0  # the client went away first
    streams_cut: int = 0  # a `cut` fault closed it


class ModelStandin:
    """The stand-in server. `async with ModelStandin() as s` runs it on the current loop, `with` in a thread."""

    def __init__(
        self,
        *,
        protocol: StandinProtocol = "openai",
        runtime: Runtime = "vllm",
        model: str = DEFAULT_MODEL,
        adapters: Sequence[str] = (),
        token_delay: float = 0.0,
        max_model_len: int = 131072,
        max_num_seqs: int | None = None,
        reasoning: bool = False,
        faults: Iterable[Fault] = (),
        host: str = "127.0.0.1",
        port: int = 0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        if protocol not in ("openai", "legacy") or runtime not in ("vllm", "transformers"):
            raise ValueError(f"unknown protocol/runtime {protocol!r}/{runtime!r}")
        if adapters and (protocol == "legacy" or runtime == "transformers"):
            # The Transformers runtime merges adapters into the one served model; only vLLM lists them.
            raise ValueError("adapters appear as their own model ids only with the vLLM runtime")
        self.protocol, self.runtime, self.model, self.adapters = protocol, runtime, model, tuple(adapters)
        self.token_delay, self.max_model_len, self.max_num_seqs = token_delay, max_model_len, max_num_seqs
        self.reasoning, self.host, self.port, self.ssl_context = reasoning, host, port, ssl_context
        self._faults = list(faults)
        self._lock = threading.Lock()  # tests may drive a threaded stand-in from the main thread
        self._stats = _Stats()
        self._log: collections.deque[dict[str, Any]] = collections.deque(maxlen=100)
        self._created = int(time.time())
        self._runner: web.AppRunner | None = None
        self._stopping = asyncio.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # ---- lifecycle -------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"{'https' if self.ssl_context else 'http'}://{self.host}:{self.port}"

    def build_app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware])
        app.router.add_get("/_standin/stats", self._get_stats)
        app.router.add_get("/_standin/requests", self._get_requests)
        app.router.add_route("*", "/_standin/faults", self._faults_endpoint)
        app.router.add_post("/_standin/config", self._config)
        app.router.add_post("/_standin/reset", self._reset)
        app.router.add_get("/health", self._health)
        if self.protocol == "openai":
            app.router.add_get("/v1/models", self._models)
            app.router.add_post("/v1/chat/completions", self._chat_completions)
        else:
            app.router.add_get("/", self._home)
            app.router.add_post("/chat", self._legacy_chat)
        return app

    async def start(self) -> str:
        self._stopping = asyncio.Event()
        # handler_cancellation: a client that goes away cancels its handler, so open-stream counts drop
        # at once (also for `hang`, which never writes and so would never notice otherwise).
        self._runner = web.AppRunner(self.build_app(), handler_cancellation=True, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, self.port))
        except OSError:  # the port is taken: a caller trying the next port leaks nothing
            sock.close()
            await self.stop()
            raise
        self.port = sock.getsockname()[1]
        await web.SockSite(self._runner, sock, backlog=1024, ssl_context=self.ssl_context).start()
        return self.url

    async def stop(self) -> None:
        self._stopping.set()  # `hang` handlers return
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> ModelStandin:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def __enter__(self) -> ModelStandin:
        """Serve from a background thread with its own event loop (for synchronous callers)."""
        loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=loop.run_forever, name="model-standin", daemon=True)
        self._thread.start()
        self._loop = loop
        asyncio.run_coroutine_threadsafe(self.start(), loop).result(timeout=10)
        return self

    def __exit__(self, *exc: object) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        try:
            asyncio.run_coroutine_threadsafe(self.stop(), loop).result(timeout=10)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=10)
            loop.close()
            self._loop = self._thread = None

    # ---- control ---------------------------------------------------------------------------------

    def add_fault(self, mode: str, **options: Any) -> Fault:
        fault = Fault(mode, **options)
        with self._lock:
            self._faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def faults(self) -> list[dict[str, Any]]:
        with self._lock:
            return [asdict(f) for f in self._faults]

    def stats(self) -> dict[str, Any]:
        with self._lock:
            data = asdict(self._stats)
            data["requests"], data["faults_applied"] = dict(self._stats.requests), dict(self._stats.faults_applied)
        data["requests_total"] = sum(data["requests"].values())
        # TCP connections the server holds open: what a client that "closed everything" must bring to 0.
        data["open_connections"] = len(self._runner.server.connections) if self._runner and self._runner.server else 0
        return data

    def requests(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._log)

    def reset(self) -> None:
        with self._lock:
            self._faults.clear()
            self._log.clear()
            open_requests, open_streams = self._stats.open_requests, self._stats.open_streams
            self._stats = _Stats(open_requests=open_requests, open_streams=open_streams)

    def _take_fault(self, path: str) -> Fault | None:
        with self._lock:
            for fault in self._faults:
                if path in fault.paths:
                    if fault.count is not None:
                        fault.count -= 1
                        if fault.count <= 0:
                            self._faults.remove(fault)
                    self._stats.faults_applied[fault.mode] += 1
                    return fault
        return None

    def _count(self, name: str, delta: int) -> None:
        with self._lock:
            setattr(self._stats, name, getattr(self._stats, name) + delta)

    async def _get_stats(self, request: web.Request) -> web.Response:
        return _json(self.stats())

    async def _get_requests(self, request: web.Request) -> web.Response:
        return _json(self.requests())

    async def _faults_endpoint(self, request: web.Request) -> web.Response:
        if request.method == "POST":
            try:
                body = await request.json()
                fault = self.add_fault(**body)
            except (ValueError, TypeError) as exc:
                return _json({"detail": str(exc)}, 400)
            return _json({"added": asdict(fault), "faults": self.faults()}, 201)
        if request.method == "DELETE":
            self.clear_faults()
            return web.Response(status=204)
        return _json({"faults": self.faults()})

    async def _config(self, request: web.Request) -> web.Response:
        body = _loads(await request.read())
        try:
            if not isinstance(body, dict):
                raise ValueError('send a JSON object, e.g. {"token_delay": 0.05}')
            if "token_delay" in body:
                self.token_delay = max(0.0, float(body["token_delay"]))
        except (TypeError, ValueError) as exc:
            return _json({"detail": str(exc)}, 400)
        return _json({"token_delay": self.token_delay})

    async def _reset(self, request: web.Request) -> web.Response:
        self.reset()
        return _json(self.stats())

    # ---- the model server ------------------------------------------------------------------------

    @web.middleware
    async def _middleware(self, request: web.Request, handler: _Handler) -> web.StreamResponse:
        if request.path.startswith("/_standin/"):
            return await handler(request)
        body = await request.read()
        with self._lock:
            self._stats.requests[f"{request.method} {request.path}"] += 1
            self._log.append(
                {"method": request.method, "path": request.path, "headers": dict(request.headers), "body": _loads(body)}
            )
        self._count("open_requests", 1)
        try:
            if self.max_num_seqs is not None and request.path == "/v1/chat/completions":
                # KAITO's limiter: vLLM runs max-num-seqs at once and queues the rest; too long a queue -> 429.
                waiting = max(0, self._stats.open_requests - 1 - self.max_num_seqs)
                if waiting > self.max_num_seqs:
                    return rate_limit_response(waiting, self.max_num_seqs)
            fault = self._take_fault(request.path)
            request[_FAULT] = fault
            if fault is not None and (response := await self._immediate_fault(request, fault)) is not None:
                return response
            try:
                return await handler(request)
            except web.HTTPNotFound:
                return _json({"detail": "Not Found"}, 404)  # FastAPI's default, as both real servers say
            except web.HTTPMethodNotAllowed:
                return _json({"detail": "Method Not Allowed"}, 405)
        finally:
            self._count("open_requests", -1)

    async def _immediate_fault(self, request: web.Request, fault: Fault) -> web.StreamResponse | None:
        legacy = self.protocol == "legacy" or self.runtime == "transformers"
        if fault.mode == "429":
            return rate_limit_response(fault.waiting, fault.max_num_seqs)
        if fault.mode in ("500", "503"):
            status = int(fault.mode)
            message = (
                "Stand-in fault: internal server error" if status == 500 else "Stand-in fault: service unavailable"
            )
            return (
                _json({"detail": message}, status)
                if legacy
                else openai_error(message, "InternalServerError", status, status)
            )
        if fault.mode == "404":
            if legacy:
                return _json({"detail": "Not Found"}, 404)
            model = (_loads(await request.read()) or {}).get("model", self.model)
            return openai_error(f"The model `{model}` does not exist.", "NotFoundError", 404, 404)
        if fault.mode == "hang":
            await self._stopping.wait()  # accepted, read, never answered; ends when the client leaves or on stop
            raise web.HTTPServiceUnavailable
        return None

    def _served(self) -> list[str]:
        return [self.model, *self.adapters]

    async def _health(self, request: web.Request) -> web.Response:
        if self.protocol == "openai" and self.runtime == "vllm":
            return web.Response(status=200)  # vLLM's /health: 200 with an empty body
        return _json({"status": "Healthy"})

    async def _home(self, request: web.Request) -> web.Response:
        return _json({"message": "Server is running"})

    async def _models(self, request: web.Request) -> web.Response:
        if self.runtime == "transformers":
            data = [{"id": self.model, "object": "model", "created": self._created, "owned_by": "kaito"}]
            return _json({"object": "list", "data": data})
        cards = []
        for model_id in self._served():
            adapter = model_id != self.model
            cards.append({
                "id": model_id, "object": "model", "created": self._created, "owned_by": "vllm",
                "root": f"/mnt/adapter/{model_id}" if adapter else self.model,
                "parent": self.model if adapter else None,
                "max_model_len": None if adapter else self.max_model_len,
                "permission": [{
                    "id": f"modelperm-{uuid.uuid4().hex}", "object": "model_permission", "created": self._created,
                    "allow_create_engine": False, "allow_sampling": True, "allow_logprobs": True,
                    "allow_search_indices": False, "allow_view": True, "allow_fine_tuning": False,
                    "organization": "*", "group": None, "is_blocking": False,
                }],
            })  # fmt: skip
        return _json({"object": "list", "data": cards})

    def answer(self, model_id: str, said: str) -> str:
        """The deterministic answer: who answers, and an echo of what the user said."""
        adapter = model_id != self.model
        who = f"{model_id} (a LoRA adapter on {self.model})" if adapter else model_id
        text = (
            f'This is the KAITO Portal model stand-in for {who} (not a real model). You said: "{said}". '
            "The same prompt always gives the same answer, streamed one word at a time."
        )
        return f"[adapter {model_id}] {text}" if adapter else text

    def reasoning_text(self, said: str) -> str:
        return f"The user wrote {len(tokenize(said))} words. A stand-in cannot think, so it echoes them. "

    def _bad_request(self, message: str) -> web.Response:
        if self.runtime == "transformers":
            return _json({"detail": message}, 422)
        return openai_error(message, "Bad Request", 400, 400)

    async def _chat_completions(self, request: web.Request) -> web.StreamResponse:
        body = _loads(await request.read())
        if not isinstance(body, dict):
            return self._bad_request("[{'type': 'json_invalid', 'loc': ('body', 0), 'msg': 'JSON decode error'}]")
        missing = [key for key in ("messages", "model") if key not in body]
        if missing:  # pydantic's words, abbreviated
            problems = ", ".join(
                f"{{'type': 'missing', 'loc': ('body', '{k}'), 'msg': 'Field required'}}" for k in missing
            )
            return self._bad_request(f"{len(missing)} validation error(s): [{problems}]")
        messages = body["messages"]
        if not isinstance(messages, list) or not all(isinstance(m, dict) and "role" in m for m in messages):
            return self._bad_request("messages: Input should be a valid list of messages with a role")
        max_tokens = body.get("max_tokens")
        if max_tokens is not None and (
            not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1
        ):
            return self._bad_request("max_tokens: Input should be a positive integer")
        stream = bool(body.get("stream"))
        if self.runtime == "transformers" and (unused := set(body) & TRANSFORMERS_UNSUPPORTED):
            return _json({"detail": f"Unsupported fields in the request: {unused}"}, 422)
        if body.get("stream_options") is not None and not stream:
            return self._bad_request("Stream options can only be defined when `stream=True`.")
        if self.runtime == "transformers" and messages and messages[-1].get("role") == "assistant":
            return _json({})  # transformers serve: "tiny-agents sends requests ending with assistant message"
        model_id = body["model"]
        if model_id not in self._served():
            return openai_error(f"The model `{model_id}` does not exist.", "NotFoundError", 404, 404)
        said = next((_text(m.get("content")) for m in reversed(messages) if m.get("role") == "user"), "")
        prompt_tokens = sum(len(tokenize(_text(m.get("content")))) for m in messages)
        if prompt_tokens + (max_tokens or 0) > self.max_model_len:
            return self._bad_request(
                f"This model's maximum context length is {self.max_model_len} tokens. However, you requested "
                f"{prompt_tokens + (max_tokens or 0)} tokens ({prompt_tokens} in the messages, {max_tokens or 0} "
                "in the completion). Please reduce the length of the messages or completion."
            )
        thinking = tokenize(self.reasoning_text(said)) if self.reasoning else []
        tokens = thinking + tokenize(self.answer(model_id, said))
        finish = "stop"
        if max_tokens is not None and len(tokens) > max_tokens:
            tokens, finish = tokens[:max_tokens], "length"
        n_thinking = min(len(thinking), len(tokens))
        usage = {
            "prompt_tokens": prompt_tokens,
            "total_tokens": prompt_tokens + len(tokens),
            "completion_tokens": len(tokens),
        }
        fault = request.get(_FAULT)
        if fault is not None and fault.mode == "slow_first_token":
            await asyncio.sleep(fault.delay)
        if not stream:
            await asyncio.sleep(self.token_delay * len(tokens))  # a real server answers once all are generated
            content, reasoning = "".join(tokens[n_thinking:]), "".join(tokens[:n_thinking]) or None
            return _json(self._completion(model_id, content, reasoning, finish, usage))
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        return await self._stream(request, model_id, tokens, n_thinking, finish, usage, include_usage, fault)

    def _completion(
        self, model_id: str, content: str, reasoning: str | None, finish: str, usage: dict[str, int]
    ) -> dict[str, Any]:
        created, chat_id = int(time.time()), f"chatcmpl-{uuid.uuid4().hex}"
        if self.runtime == "transformers":  # ChatCompletion.model_dump(exclude_none=True)
            choice = {"finish_reason": finish, "index": 0, "message": {"content": content, "role": "assistant"}}
            return {"id": chat_id, "choices": [choice], "created": created, "model": model_id,
                    "object": "chat.completion", "usage": usage}  # fmt: skip
        message = {"annotations": None, "audio": None, "content": content, "function_call": None,
                   "reasoning_content": reasoning, "refusal": None, "role": "assistant", "tool_calls": []}  # fmt: skip
        choice = {"finish_reason": finish, "index": 0, "logprobs": None, "message": message, "stop_reason": None}
        return {
            "choices": [choice], "created": created, "id": chat_id, "kv_transfer_params": None,
            "model": model_id, "object": "chat.completion", "prompt_logprobs": None, "service_tier": None,
            "system_fingerprint": None, "usage": {**usage, "prompt_tokens_details": None},
        }  # fmt: skip

    async def _stream(
        self,
        request: web.Request,
        model_id: str,
        tokens: list[str],
        n_thinking: int,
        finish: str,
        usage: dict[str, int],
        include_usage: bool,
        fault: Fault | None,
    ) -> web.StreamResponse:
        vllm = self.runtime == "vllm"
        head = {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": model_id,
        }

        def frame(
            delta: dict[str, Any], finish_reason: str | None = None, extra: dict[str, Any] | None = None
        ) -> bytes:
            choice: dict[str, Any] = {"index": 0, "delta": delta}
            if vllm:
                choice.update(logprobs=None, finish_reason=finish_reason)
                if finish_reason:
                    choice["stop_reason"] = None
            elif finish_reason:
                choice["finish_reason"] = finish_reason
            return b"data: " + _dumps({**head, "choices": [choice], **(extra or {})}) + b"\n\n"

        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache"}
        )
        await response.prepare(request)
        self._count("open_streams", 1)
        self._count("streams_started", 1)
        outcome = "streams_disconnected"
        try:
            await response.write(frame({"role": "assistant", "content": ""} if vllm else {"role": "assistant"}))
            for i, token in enumerate(tokens):
                content_index = i - n_thinking
                if (
                    fault is not None
                    and fault.mode in ("stall", "cut", "stream_error")
                    and content_index == fault.after_tokens
                ):
                    if fault.mode == "stall":  # connection stays open, nothing more comes: a read timeout
                        await self._stopping.wait()
                        raise ConnectionResetError("stand-in stopped")
                    if fault.mode == "stream_error":  # how vLLM reports an engine failure inside a 200 stream
                        error = {
                            "message": "Stand-in fault: the engine failed mid-answer",
                            "type": "InternalServerError",
                            "param": None,
                            "code": 500,
                        }
                        await response.write(b"data: " + _dumps({"error": error}) + b"\n\n")
                        outcome = "streams_completed"
                        return response
                    outcome = "streams_cut"
                    if request.transport is not None:
                        request.transport.close()  # flushes what was written, then closes: no final chunk, no [DONE]
                    await asyncio.sleep(3600)  # handler_cancellation ends this as the connection drops
                await asyncio.sleep(self.token_delay)
                last = i == len(tokens) - 1
                delta = {"reasoning_content": token} if content_index < 0 else {"content": token}
                extra = {"usage": usage} if last and not vllm else None  # transformers: usage on the final chunk
                await response.write(frame(delta, finish if last and vllm else None, extra))
            if not vllm:
                await response.write(frame({}, finish, {"usage": usage}))
            if vllm and include_usage:
                await response.write(b"data: " + _dumps({**head, "choices": [], "usage": usage}) + b"\n\n")
            if vllm:
                await response.write(b"data: [DONE]\n\n")  # transformers serve ends the stream without it
            await response.write_eof()
            outcome = "streams_completed"
            return response
        finally:
            self._count("open_streams", -1)
            self._count(outcome, 1)

    async def _legacy_chat(self, request: web.Request) -> web.Response:
        body = _loads(await request.read())
        if not isinstance(body, dict):
            return _json({"detail": [{"type": "json_invalid", "loc": ["body", 0], "msg": "JSON decode error"}]}, 422)
        for key, kind in (("prompt", str), ("generate_kwargs", dict), ("return_full_text", bool)):
            if body.get(key) is not None and not isinstance(body[key], kind):
                problem = {
                    "type": f"{kind.__name__}_type",
                    "loc": ["body", key],
                    "msg": f"Input should be a valid {kind.__name__}",
                }
                return _json({"detail": [problem]}, 422)
        prompt = body.get("prompt")
        if not prompt:
            return _json({"detail": "Text generation parameter prompt required"}, 400)
        kwargs = body.get("generate_kwargs") or {}
        tokens = tokenize(self.answer(self.model, prompt))
        # transformers: max_new_tokens wins; else max_length (default 200) counts the prompt too.
        limit = kwargs.get("max_new_tokens")
        if not isinstance(limit, int):
            limit = max(0, int(kwargs.get("max_length", 200)) - len(tokenize(prompt)))
        tokens = tokens[:limit]
        fault = request.get(_FAULT)
        await asyncio.sleep(
            (fault.delay if fault and fault.mode == "slow_first_token" else 0) + self.token_delay * len(tokens)
        )
        full = body.get("return_full_text", True)  # the pipeline's default repeats the prompt first
        return _json({"Result": (prompt if full else "") + "".join(tokens)})


def _loads(body: bytes) -> Any:
    try:
        return json.loads(body) if body else None
    except ValueError:
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m devcluster.model_standin", description="KAITO model server stand-in."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (printed)")
    parser.add_argument("--protocol", choices=["openai", "legacy"], default="openai")
    parser.add_argument("--runtime", choices=["vllm", "transformers"], default="vllm", help="for --protocol openai")
    parser.add_argument("--model", default=DEFAULT_MODEL, help="served model name")
    parser.add_argument("--adapter", action="append", default=[], help="LoRA adapter id (repeatable; vLLM only)")
    parser.add_argument("--token-delay", type=float, default=0.02, help="seconds per streamed token")
    parser.add_argument("--max-model-len", type=int, default=131072)
    parser.add_argument("--max-num-seqs", type=int, default=None, help="enable KAITO's 429 queue limiter")
    parser.add_argument("--reasoning", action="store_true", help="stream reasoning_content before the answer")
    args = parser.parse_args(argv)
    standin = ModelStandin(
        protocol=args.protocol, runtime=args.runtime, model=args.model, adapters=args.adapter,
        token_delay=args.token_delay, max_model_len=args.max_model_len, max_num_seqs=args.max_num_seqs,
        reasoning=args.reasoning, host=args.host, port=args.port,
    )  # fmt: skip

    async def serve() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        async with standin:
            print(f"KAITO model stand-in ({args.protocol}) for {args.model} listening on {standin.url}", flush=True)
            await stop.wait()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
