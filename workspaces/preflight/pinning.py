"""Connections pinned to netguard-checked addresses, with one deadline over every socket operation."""

from __future__ import annotations

import ssl
import time
from collections.abc import Iterable, Mapping
from typing import Any

import httpcore
import httpx


class Budget:
    """Shared deadline and byte counters of one fetcher."""

    def __init__(self, total: float) -> None:
        self.total = total
        self.deadline = time.monotonic() + total
        self.wire_bytes = 0  # everything received on sockets (headers included, after TLS)

    def clamp(self, timeout: float | None, exc: type[Exception]) -> float:
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise exc(f"the total time limit of {self.total:g} s was reached")
        return remaining if timeout is None else min(timeout, remaining)


class _DeadlineStream(httpcore.NetworkStream):
    """Every socket read/write/handshake waits at most until the fetcher's deadline."""

    def __init__(self, inner: httpcore.NetworkStream, budget: Budget) -> None:
        self._inner = inner
        self._budget = budget

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        data = self._inner.read(max_bytes, self._budget.clamp(timeout, httpcore.ReadTimeout))
        self._budget.wire_bytes += len(data)
        return data

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, self._budget.clamp(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.NetworkStream:
        # server_hostname is the URL's host name: SNI and certificate checks use it, not the pinned IP.
        inner = self._inner.start_tls(
            ssl_context, server_hostname, self._budget.clamp(timeout, httpcore.ConnectTimeout)
        )
        return _DeadlineStream(inner, self._budget)

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class PinnedBackend(httpcore.NetworkBackend):
    """Connects only to the addresses netguard approved for (host, port); never resolves names itself."""

    def __init__(self, pins: Mapping[tuple[str, int], tuple[str, ...]], budget: Budget) -> None:
        self._pins = pins
        self._budget = budget
        self._inner = httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        addresses = self._pins.get((host.lower().strip("[]").rstrip("."), port))
        if not addresses:
            raise httpcore.ConnectError(f"{host}:{port} was not checked")  # cannot happen via SafeFetcher
        error: Exception | None = None
        for address in addresses:
            try:
                stream = self._inner.connect_tcp(
                    address, port, self._budget.clamp(timeout, httpcore.ConnectTimeout), local_address,
                    socket_options,
                )  # fmt: skip
                return _DeadlineStream(stream, self._budget)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                error = exc
        assert error is not None
        raise error


class PinnedTransport(httpx.HTTPTransport):
    def __init__(self, backend: PinnedBackend, context: ssl.SSLContext) -> None:
        super().__init__(verify=context, trust_env=False)
        # httpx has no public knob for the network backend; its pool is replaced by one using ours
        # (httpx is pinned to 0.28 and tests/preflight/test_fetch.py proves the pinning).
        self._pool = httpcore.ConnectionPool(ssl_context=context, network_backend=backend, max_connections=1)
