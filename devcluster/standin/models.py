"""One model stand-in per Ready inference Workspace, configured from the Workspace as KAITO configures its server."""

# KAITO runs a model server per Workspace. It serves the preset under the lower-cased last path segment of
# inference.preset.name; under vLLM each LoRA adapter (inference.adapters[].source.name) is one more model id, while
# the Transformers runtime (annotation kaito.sh/runtime: transformers) merges them into the one model
# (kaito-reference §2.3, §3). Here all servers share one address, one event loop and one thread (2 cores); each has its
# own port, which the Workspace's Service and Endpoints name (devcluster/standin/stage.py publish_endpoints).

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Coroutine, Iterable
from dataclasses import dataclass
from typing import Any

from devcluster.model_standin import ModelStandin
from devcluster.standin.kaito_logic import runtime, served_name
from devcluster.standin.modelrouter import ModelRouter

Obj = dict[str, Any]
log = logging.getLogger("kaito-standin")
PORT_COUNT = 100  # ports tried from first_port on: KAITO's 5000 for the first Workspace, then 5001...


@dataclass(frozen=True)
class ModelConfig:
    model: str
    runtime: str
    adapters: tuple[str, ...] = ()


def model_config(ws: Obj) -> ModelConfig:
    """What KAITO's model server for this Workspace serves (a template Workspace: the Workspace's name)."""
    kind = runtime(ws)
    inference = ws.get("inference") or {}
    names = tuple((a.get("source") or {}).get("name", "") for a in inference.get("adapters") or [])
    adapters = tuple(name for name in names if name) if kind == "vllm" else ()
    return ModelConfig(served_name(ws) or ws["metadata"]["name"], kind, adapters)


class ModelFleet:
    """The Workspaces' model stand-ins on `host`; thread-safe; `with ModelFleet(...)` stops them all at the end."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        *,
        first_port: int = 5000,
        token_delay: float = 0.02,
        max_num_seqs: int | None = None,
    ) -> None:
        self.host, self.first_port = host, first_port  # first_port 0: any free port
        self.token_delay, self.max_num_seqs = token_delay, max_num_seqs
        self._servers: dict[tuple[str, str], tuple[str, ModelConfig, ModelStandin]] = {}
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._router: ModelRouter | None = None

    # --- lifecycle ---------------------------------------------------------------------------------------------
    def start(self) -> ModelFleet:
        loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=loop.run_forever, name="model-standins", daemon=True)
        self._thread.start()
        self._loop = loop
        return self

    def close(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        with self._lock:
            servers = [server for _uid, _config, server in self._servers.values()]
            self._servers.clear()
        try:
            for server in servers:
                self._run(server.stop())
            if self._router is not None:
                self._run(self._router.stop())
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=10)
            loop.close()
            self._loop = self._thread = self._router = None

    def __enter__(self) -> ModelFleet:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run(self, coro: Coroutine[Any, Any, Any], timeout: float = 15.0) -> Any:
        if self._loop is None:
            coro.close()
            raise RuntimeError("the model fleet is not running")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    # --- per Workspace -----------------------------------------------------------------------------------------
    def serve(self, ws: Obj, prefer: int | None = None) -> int:
        """Start this Workspace's stand-in unless it runs with the same config already; return its port.

        A new uid (the Workspace was replaced) or a changed spec (adapters, runtime) restarts it, on the same port
        if it can; `prefer` is the port to try first (the one its Endpoints name, so a restart keeps the ports).
        """
        meta = ws["metadata"]
        key, uid, config = (meta["namespace"], meta["name"]), meta.get("uid", ""), model_config(ws)
        with self._lock:  # held while a server starts: two plays must not take the same port
            current = self._servers.get(key)
            if current and current[0] == uid and current[1] == config:
                return current[2].port
            if current:
                del self._servers[key]
                self._run(current[2].stop())
                prefer = current[2].port
            server = self._bind(config, self._candidates(prefer))
            self._servers[key] = (uid, config, server)
        adapters = f", adapters {', '.join(config.adapters)}" if config.adapters else ""
        log.info("%s/%s: model stand-in %s (%s%s) on %s", *key, config.model, config.runtime, adapters, server.url)
        return server.port

    def _candidates(self, prefer: int | None) -> Iterable[int]:
        taken = {server.port for _uid, _config, server in self._servers.values()}
        if self.first_port == 0:
            ports: list[int] = [prefer] if prefer else []
            return [*ports, 0]
        span = range(self.first_port, self.first_port + PORT_COUNT)
        first = [prefer] if prefer in span else []
        return [port for port in (*first, *span) if port not in taken]

    def _bind(self, config: ModelConfig, ports: Iterable[int]) -> ModelStandin:
        for port in ports:
            server = ModelStandin(
                runtime="transformers" if config.runtime == "transformers" else "vllm",
                model=config.model, adapters=config.adapters, token_delay=self.token_delay,
                max_num_seqs=self.max_num_seqs, host=self.host, port=port,
            )  # fmt: skip
            try:
                self._run(server.start())
                return server
            except OSError:  # taken by another process (start() has cleaned up): the next one
                continue
        raise RuntimeError(f"no free port for a model stand-in on {self.host} from {self.first_port}")

    def release(self, namespace: str, name: str, uid: str = "") -> bool:
        """Stop the Workspace's stand-in (only if it serves that uid, when one is given); False if none ran."""
        with self._lock:
            current = self._servers.get((namespace, name))
            if current is None or (uid and current[0] != uid):
                return False
            del self._servers[(namespace, name)]
            self._run(current[2].stop())
        log.info("%s/%s: model stand-in on %s stopped", namespace, name, current[2].url)
        return True

    def get(self, namespace: str, name: str) -> ModelStandin | None:
        # No lock: the router calls this on the fleet's own loop, which serve() may be waiting for.
        current = self._servers.get((namespace, name))
        return current[2] if current else None

    def servers(self) -> dict[tuple[str, str], ModelStandin]:
        return {key: server for key, (_uid, _config, server) in list(self._servers.items())}

    # --- without the extra address -----------------------------------------------------------------------------
    def start_router(self, port: int = 5000) -> ModelRouter:
        """http://127.0.0.1:<port>/<namespace>/<name>/... -> that Workspace's stand-in (see modelrouter.py)."""
        router = ModelRouter(self.get, host="127.0.0.1", port=port)
        self._run(router.start())
        self._router = router
        return router
