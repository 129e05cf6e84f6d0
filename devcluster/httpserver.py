"""The threaded HTTP(S) server on 127.0.0.1 that the stand-ins without an event loop share, and their lifecycle."""

from __future__ import annotations

import ssl
import sys
import threading
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self


class QuietHandler(BaseHTTPRequestHandler):
    """Logs nothing: tests read what each stand-in records, not stderr."""

    def log_message(self, format: str, *args: Any) -> None:
        pass


def respond(http: BaseHTTPRequestHandler, status: int, body: bytes, headers: Mapping[str, str]) -> None:
    """Send a whole response: `headers` in their order, then Content-Length and `body`."""
    http.send_response(status)
    for key, value in headers.items():
        http.send_header(key, value)
    http.send_header("Content-Length", str(len(body)))
    http.end_headers()
    http.wfile.write(body)


class _Server(ThreadingHTTPServer):
    """Records failed TLS handshakes, if given a list, instead of printing their tracebacks."""

    def __init__(self, handler: type[BaseHTTPRequestHandler], tls_failures: list[str] | None) -> None:
        super().__init__(("127.0.0.1", 0), handler)
        self._failures = tls_failures

    def handle_error(self, request: Any, client_address: Any) -> None:
        error = sys.exc_info()[1]
        if self._failures is not None and isinstance(error, ssl.SSLError | ConnectionError):
            self._failures.append(str(error))
        else:
            super().handle_error(request, client_address)


class LocalServer:
    """Serves `handler` on 127.0.0.1:<free port> from a daemon thread named `name`, until stop()."""

    def __init__(
        self,
        handler: type[BaseHTTPRequestHandler],
        *,
        name: str,
        tls: ssl.SSLContext | None = None,
        tls_failures: list[str] | None = None,
    ) -> None:
        self._server = _Server(handler, tls_failures)
        if tls is not None:
            # Handshake in the request thread, not in accept(): a stuck client must not block the others.
            self._server.socket = tls.wrap_socket(self._server.socket, server_side=True, do_handshake_on_connect=False)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, name=name, daemon=True
        )
        self._thread.start()

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


class ThreadedStandin:
    """start() / stop() / `with` for a stand-in that a LocalServer serves; a subclass says how in `_listen`."""

    _server: LocalServer | None = None

    def _listen(self) -> LocalServer:
        raise NotImplementedError

    def start(self) -> Self:
        self._server = self._listen()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
