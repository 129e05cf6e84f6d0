"""Without the extra address: http://127.0.0.1:PORT/<namespace>/<name>/... reaches that Workspace's model stand-in."""

# The apiserver refuses loopback Endpoints, so without root the service proxy cannot reach any model stand-in. The
# portal then uses KAITO_INFERENCE_URL, a template with {namespace} and {name} (workspaces/services/chat_access.py),
# and this router plays the service proxy's part: the same 503 Status when the Workspace has no server, and the
# answer's bytes as they come (streams stay streams; a stream the server cuts is cut here too).

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Callable
from typing import Any

import aiohttp
from aiohttp import web

# Hop-by-hop and framing headers: each side of the router sets its own.
SKIP = {"host", "connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "content-length",
        "proxy-authorization", "proxy-authenticate", "server", "date"}  # fmt: skip


def _status(code: int, reason: str, message: str) -> web.Response:
    """A Kubernetes Status, as the apiserver's service proxy answers when it cannot reach a model."""
    body = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
            "reason": reason, "code": code}  # fmt: skip
    return web.Response(status=code, text=json.dumps(body), content_type="application/json")


class ModelRouter:
    """Runs on the model fleet's event loop; `lookup(namespace, name)` gives the Workspace's server (or None)."""

    def __init__(self, lookup: Callable[[str, str], Any], *, host: str = "127.0.0.1", port: int = 5000) -> None:
        self.lookup, self.host, self.port = lookup, host, port
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def template(self) -> str:
        """KAITO_INFERENCE_URL for the portal: it fills in {namespace} and {name}."""
        return f"{self.url}/{{namespace}}/{{name}}"

    async def start(self) -> str:
        app = web.Application()
        app.router.add_route("*", "/{namespace}/{name}/{path:.*}", self._forward)
        app.router.add_route("*", "/{namespace}/{name}", self._forward)
        # handler_cancellation: a client that leaves cancels the handler, which closes the upstream connection too.
        self._runner = web.AppRunner(app, handler_cancellation=True, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, self.port))
        except OSError:
            sock.close()
            await self._runner.cleanup()
            raise
        self.port = sock.getsockname()[1]
        await web.SockSite(self._runner, sock, backlog=1024).start()
        self._session = aiohttp.ClientSession(auto_decompress=False, timeout=aiohttp.ClientTimeout(total=None))
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        namespace, name = request.match_info["namespace"], request.match_info["name"]
        server = self.lookup(namespace, name)
        if server is None or self._session is None:
            return _status(503, "ServiceUnavailable", f'no endpoints available for service "{name}"')
        target = f"http://{server.host}:{server.port}/{request.match_info.get('path', '')}"
        headers = {k: v for k, v in request.headers.items() if k.lower() not in SKIP}
        body = await request.read()
        try:
            upstream = await self._session.request(
                request.method, target, params=request.query, headers=headers, data=body or None
            )
        except aiohttp.ClientConnectionError as err:
            return _status(503, "ServiceUnavailable", f"error trying to reach service: {err}")
        async with upstream:
            response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
            for key, value in upstream.headers.items():
                if key.lower() not in SKIP:
                    response.headers.add(key, value)
            await response.prepare(request)
            try:
                async for chunk in upstream.content.iter_any():
                    await response.write(chunk)
            except aiohttp.ClientPayloadError:  # the server closed mid-answer: the client sees the same
                if request.transport is not None:
                    request.transport.close()
                await asyncio.sleep(3600)  # handler_cancellation ends this as the connection drops
                return response
            await response.write_eof()
            return response
