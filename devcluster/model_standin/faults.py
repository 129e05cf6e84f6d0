"""The model stand-in's faults on demand, and the error responses of the real servers (KAITO's 429 among them)."""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

from aiohttp import web

from devcluster.model_standin.answers import dumps, openai_error_body

GENERATION_PATHS = ("/v1/chat/completions", "/chat")
FAULT_MODES = ("429", "500", "503", "404", "hang", "slow_first_token", "stall", "cut", "stream_error")
MID_STREAM_MODES = ("stall", "cut", "stream_error")


@dataclass
class Fault:
    """What the next matching request(s) suffer; POST /_standin/faults takes these fields as JSON.

    Modes: 429 (KAITO's rate-limit body), 500, 503, 404 (model not found), hang (read the request, never
    answer), slow_first_token (`delay` s), stall (`after_tokens` tokens, then silence), cut (`after_tokens`
    tokens, then close without [DONE]), stream_error (an error event inside the 200 stream). Being down: stop it.
    """

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


FAULT = web.RequestKey("fault", Fault)  # the fault that hit this request, for the handlers


class FaultQueue:
    """The queued faults; thread-safe, as tests may drive a threaded stand-in from the main thread."""

    def __init__(self, faults: Iterable[Fault] = ()) -> None:
        self._faults = list(faults)
        self._lock = threading.Lock()

    def add(self, fault: Fault) -> Fault:
        with self._lock:
            self._faults.append(fault)
        return fault

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    def listed(self) -> list[dict[str, Any]]:
        with self._lock:
            return [asdict(f) for f in self._faults]

    def take(self, path: str) -> Fault | None:
        """The first fault for `path`, used up by one more request."""
        with self._lock:
            for fault in self._faults:
                if path in fault.paths:
                    if fault.count is not None:
                        fault.count -= 1
                        if fault.count <= 0:
                            self._faults.remove(fault)
                    return fault
        return None


def json_response(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=dumps(data), status=status, content_type="application/json")


def openai_error(message: str, kind: str, code: int | str, status: int) -> web.Response:
    return json_response(openai_error_body(message, kind, code), status)


def rate_limit_response(waiting: int, max_num_seqs: int) -> web.Response:
    """The body of KAITO's vLLM rate limiter (presets/workspace/inference/vllm/rate_limit.py)."""
    message = f"Too many requests: waiting queue ({waiting}) exceeds max-num-seqs ({max_num_seqs})."
    return openai_error(message, "requests", "rate_limit_exceeded", 429)


def error_response(fault: Fault, *, legacy: bool, body: Any, model: str) -> web.Response | None:
    """The answer of a fault that answers at once instead of the model, in the server's own words; else None.

    `legacy`: FastAPI's {"detail": ...} (KAITO <= 0.8 and the Transformers runtime), else vLLM's OpenAI error;
    `body`: the request's JSON, whose model a 404 names (`model` if it names none).
    """
    if fault.mode == "429":
        return rate_limit_response(fault.waiting, fault.max_num_seqs)
    if fault.mode in ("500", "503"):
        status = int(fault.mode)
        message = "Stand-in fault: internal server error" if status == 500 else "Stand-in fault: service unavailable"
        return (
            json_response({"detail": message}, status)
            if legacy
            else openai_error(message, "InternalServerError", status, status)
        )
    if fault.mode == "404":
        if legacy:
            return json_response({"detail": "Not Found"}, 404)
        asked = (body or {}).get("model", model)
        return openai_error(f"The model `{asked}` does not exist.", "NotFoundError", 404, 404)
    return None
