"""The model stand-in's aiohttp server: its lifecycle, counters, request log and the /_standin/ control API."""

from __future__ import annotations

import asyncio
import collections
import socket
import ssl
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from aiohttp import web

from devcluster.model_standin import handlers
from devcluster.model_standin.answers import DEFAULT_MODEL, Runtime, answer_text, loads, reasoning_text
from devcluster.model_standin.faults import FAULT, Fault, FaultQueue, error_response, json_response, rate_limit_response

StandinProtocol = Literal["openai", "legacy"]
_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_Endpoint = Callable[["ModelStandin", web.Request], Awaitable[web.StreamResponse]]


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
    """The stand-in server. `async with ModelStandin() as s` runs it on the current loop, `with` in a thread.

    It speaks the upstream protocols exactly (vLLM's / the Transformers runtime's OpenAI API, and the legacy
    `POST /chat` of KAITO <= 0.8), answers deterministically, says it is a stand-in, and fails on demand
    (see Fault). Control endpoints live under /_standin/, which no real model server has:

        GET    /_standin/stats      request counts, open requests/streams/connections, how streams ended
        GET    /_standin/requests   the last 100 requests (method, path, headers, JSON body)
        POST   /_standin/faults     {"mode": "429", "count": 1, "delay": 2.0, "after_tokens": 3, "paths": [...]}
        GET    /_standin/faults     DELETE /_standin/faults   list / clear the queued faults
        POST   /_standin/config     {"token_delay": 0.05}
        POST   /_standin/reset      clear faults, counters and the request log
    """

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
        self.created = int(time.time())  # the `created` of its models
        self._faults = FaultQueue(faults)
        self._lock = threading.Lock()  # tests may drive a threaded stand-in from the main thread
        self._stats = _Stats()
        self._log: collections.deque[dict[str, Any]] = collections.deque(maxlen=100)
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
        app.router.add_get("/health", self._serve(handlers.health))
        if self.protocol == "openai":
            app.router.add_get("/v1/models", self._serve(handlers.models))
            app.router.add_post("/v1/chat/completions", self._serve(handlers.chat_completions))
        else:
            app.router.add_get("/", self._serve(handlers.home))
            app.router.add_post("/chat", self._serve(handlers.legacy_chat))
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

    async def until_stopped(self) -> None:
        await self._stopping.wait()

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

    # ---- what it serves --------------------------------------------------------------------------

    def served(self) -> list[str]:
        return [self.model, *self.adapters]

    def answer(self, model_id: str, said: str) -> str:
        """The deterministic answer: who answers, and an echo of what the user said."""
        return answer_text(self.model, model_id, said)

    def reasoning_text(self, said: str) -> str:
        return reasoning_text(said)

    # ---- control ---------------------------------------------------------------------------------

    def add_fault(self, mode: str, **options: Any) -> Fault:
        return self._faults.add(Fault(mode, **options))

    def clear_faults(self) -> None:
        self._faults.clear()

    def faults(self) -> list[dict[str, Any]]:
        return self._faults.listed()

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
        self._faults.clear()
        with self._lock:
            self._log.clear()
            open_requests, open_streams = self._stats.open_requests, self._stats.open_streams
            self._stats = _Stats(open_requests=open_requests, open_streams=open_streams)

    def count(self, name: str, delta: int) -> None:
        """Move one of the stats' counters (open_streams, streams_completed, ...)."""
        with self._lock:
            setattr(self._stats, name, getattr(self._stats, name) + delta)

    def _take_fault(self, path: str) -> Fault | None:
        fault = self._faults.take(path)
        if fault is not None:
            with self._lock:
                self._stats.faults_applied[fault.mode] += 1
        return fault

    async def _get_stats(self, request: web.Request) -> web.Response:
        return json_response(self.stats())

    async def _get_requests(self, request: web.Request) -> web.Response:
        return json_response(self.requests())

    async def _faults_endpoint(self, request: web.Request) -> web.Response:
        if request.method == "POST":
            try:
                body = await request.json()
                fault = self.add_fault(**body)
            except (ValueError, TypeError) as exc:
                return json_response({"detail": str(exc)}, 400)
            return json_response({"added": asdict(fault), "faults": self.faults()}, 201)
        if request.method == "DELETE":
            self.clear_faults()
            return web.Response(status=204)
        return json_response({"faults": self.faults()})

    async def _config(self, request: web.Request) -> web.Response:
        body = loads(await request.read())
        try:
            if not isinstance(body, dict):
                raise ValueError('send a JSON object, e.g. {"token_delay": 0.05}')
            if "token_delay" in body:
                self.token_delay = max(0.0, float(body["token_delay"]))
        except (TypeError, ValueError) as exc:
            return json_response({"detail": str(exc)}, 400)
        return json_response({"token_delay": self.token_delay})

    async def _reset(self, request: web.Request) -> web.Response:
        self.reset()
        return json_response(self.stats())

    # ---- the model server ------------------------------------------------------------------------

    def _serve(self, endpoint: _Endpoint) -> _Handler:
        async def handle(request: web.Request) -> web.StreamResponse:
            return await endpoint(self, request)

        return handle

    @web.middleware
    async def _middleware(self, request: web.Request, handler: _Handler) -> web.StreamResponse:
        if request.path.startswith("/_standin/"):
            return await handler(request)
        body = loads(await request.read())
        with self._lock:
            self._stats.requests[f"{request.method} {request.path}"] += 1
            self._log.append(
                {"method": request.method, "path": request.path, "headers": dict(request.headers), "body": body}
            )
        self.count("open_requests", 1)
        try:
            if self.max_num_seqs is not None and request.path == "/v1/chat/completions":
                # KAITO's limiter: vLLM runs max-num-seqs at once and queues the rest; too long a queue -> 429.
                waiting = max(0, self._stats.open_requests - 1 - self.max_num_seqs)
                if waiting > self.max_num_seqs:
                    return rate_limit_response(waiting, self.max_num_seqs)
            fault = self._take_fault(request.path)
            request[FAULT] = fault
            if fault is not None:
                legacy = self.protocol == "legacy" or self.runtime == "transformers"
                if (response := error_response(fault, legacy=legacy, body=body, model=self.model)) is not None:
                    return response
                if fault.mode == "hang":
                    await (
                        self._stopping.wait()
                    )  # accepted, read, never answered; ends when the client leaves or on stop
                    raise web.HTTPServiceUnavailable
            try:
                return await handler(request)
            except web.HTTPNotFound:
                return json_response({"detail": "Not Found"}, 404)  # FastAPI's default, as both real servers say
            except web.HTTPMethodNotAllowed:
                return json_response({"detail": "Method Not Allowed"}, 405)
        finally:
            self.count("open_requests", -1)
