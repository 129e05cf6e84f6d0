"""A threaded test HTTP server on 127.0.0.1: Range, lazily generated huge files, redirects, slowness, byte counts."""

from __future__ import annotations

import re
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Route:
    data: bytes | None = None
    size: int | None = None  # with `generate`: a virtual file of this many bytes, made on demand
    generate: Callable[[int, int], bytes] | None = None  # (offset, length) -> bytes
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    ignore_range: bool = False
    redirect: str | None = None  # Location to send with `status` (a 3xx)
    delay: float = 0.0  # before the status line
    trickle: float = 0.0  # pause between 1-byte writes of the body
    content_type: str = "application/octet-stream"
    head_status: int | None = None  # answer HEAD with this bare status (servers that refuse HEAD)

    @property
    def length(self) -> int:
        return len(self.data) if self.data is not None else int(self.size or 0)

    def read(self, offset: int, length: int) -> bytes:
        if self.data is not None:
            return self.data[offset : offset + length]
        assert self.generate is not None
        return self.generate(offset, length)


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    sni: str | None = None


def repeating(pattern: bytes) -> Callable[[int, int], bytes]:
    """Bytes of an endless repetition of pattern, for lazily generated huge files."""

    def generate(offset: int, length: int) -> bytes:
        start = offset % len(pattern)
        reps = (start + length) // len(pattern) + 1
        return (pattern * reps)[start : start + length]

    return generate


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: object) -> None:  # quiet test output
        pass

    def do_HEAD(self) -> None:
        self._serve(body=False)

    def do_GET(self) -> None:
        self._serve(body=True)

    do_POST = do_DELETE = do_GET  # fake registries in tests answer these from their routes too

    def _serve(self, *, body: bool) -> None:
        owner = self.server.owner
        path = self.path.split("?", 1)[0]
        sni = getattr(self.connection, "kaito_sni", None)
        owner.seen.append(Seen(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, sni))
        route = owner.routes.get(path)
        if route is None:
            return self._reply(404, {}, b"not found", body)
        if route.head_status is not None and not body:
            return self._reply(route.head_status, {}, b"", body)
        if route.delay:
            time.sleep(route.delay)
        if route.redirect is not None:
            return self._reply(route.status, {"Location": route.redirect}, b"", body)
        if route.status != 200:
            return self._reply(route.status, route.headers, route.data or b"", body)
        start, end, status = 0, route.length - 1, 200
        wanted = self.headers.get("Range")
        headers = {"Accept-Ranges": "bytes", "Content-Type": route.content_type, **route.headers}
        if route.ignore_range:
            headers.pop("Accept-Ranges")
        elif wanted:
            parsed = _parse_range(wanted, route.length)
            if parsed is None:
                return self._reply(416, {"Content-Range": f"bytes */{route.length}"}, b"", body)
            (start, end), status = parsed, 206
            headers["Content-Range"] = f"bytes {start}-{end}/{route.length}"
        self.send_response(status)
        for name, value in {**headers, "Content-Length": str(end - start + 1), "Connection": "close"}.items():
            self.send_header(name, value)
        self.end_headers()
        if body:
            self._stream(route, path, start, end)

    def _stream(self, route: Route, path: str, start: int, end: int) -> None:
        step = 1 if route.trickle else 16384
        position = start
        give_up = time.monotonic() + 30  # a forgotten slow response never outlives the test run by much
        try:
            while position <= end and time.monotonic() < give_up:
                chunk = route.read(position, min(step, end - position + 1))
                self.wfile.write(chunk)
                self.server.owner.count(path, len(chunk))
                position += len(chunk)
                if route.trickle:
                    self.wfile.flush()
                    time.sleep(route.trickle)
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError, OSError):
            pass  # the client stopped reading: exactly what the size caps should make it do

    def _reply(self, status: int, headers: dict[str, str], payload: bytes, body: bool) -> None:
        self.send_response(status)
        for name, value in {**headers, "Content-Length": str(len(payload)), "Connection": "close"}.items():
            self.send_header(name, value)
        self.end_headers()
        if body:
            self.wfile.write(payload)


def _parse_range(value: str, length: int) -> tuple[int, int] | None:
    match = re.fullmatch(r"bytes=(\d*)-(\d*)", value.strip())
    if not match or match.groups() == ("", ""):
        return None
    first, last = match.groups()
    if first == "":
        start, end = max(0, length - int(last)), length - 1
    else:
        start, end = int(first), min(int(last), length - 1) if last else length - 1
    return (start, end) if start <= end < length else None


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    owner: TestServer

    def server_bind(self) -> None:
        # A small send buffer keeps what the kernel queues (and we count) close to what the client reads.
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 32768)
        super().server_bind()

    def get_request(self) -> tuple[socket.socket, object]:
        conn, address = super().get_request()
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 32768)
        if self.owner.tls is not None:
            holder: dict[str, str | None] = {}
            self.owner.tls.sni_callback = lambda _sock, name, _ctx: holder.update(sni=name)  # type: ignore[assignment]
            conn = self.owner.tls.wrap_socket(conn, server_side=True)
            conn.kaito_sni = holder.get("sni")  # type: ignore[attr-defined]
        return conn, address


class TestServer:
    """Serve Routes on 127.0.0.1:<free port>; count body bytes sent per path."""

    __test__ = False  # not a test class despite its name

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.routes: dict[str, Route] = {}
        self.seen: list[Seen] = []
        self.sent: dict[str, int] = {}
        self.tls = tls
        self._lock = threading.Lock()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.owner = self
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05})

    def start(self) -> TestServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join(timeout=5)
        self._server.server_close()

    def add(self, path: str, route: Route | bytes) -> str:
        self.routes[path] = route if isinstance(route, Route) else Route(data=route)
        return self.url(path)

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        scheme = "https" if self.tls else "http"
        return f"{scheme}://{host}:{self.port}{path}"

    def count(self, path: str, n: int) -> None:
        with self._lock:
            self.sent[path] = self.sent.get(path, 0) + n

    def bytes_sent(self, path: str | None = None) -> int:
        with self._lock:
            return self.sent.get(path, 0) if path else sum(self.sent.values())

    def bytes_sent_when(self, path: str | None, expected: int, timeout: float = 5.0) -> int:
        """bytes_sent(path) once it reaches `expected` (or at the timeout): a handler counts a chunk only after
        writing it, so the client may hold the bytes a moment before the count does."""
        deadline = time.monotonic() + timeout
        while self.bytes_sent(path) < expected and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.bytes_sent(path)
