"""Types, wire formats and error wording of KAITO's model APIs; no I/O (workspaces.chat does that)."""

from __future__ import annotations

import json
import re
import ssl
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx

Protocol = Literal["openai", "legacy"]
# unreachable: refused/DNS; timeout: no connection, or silence for read_timeout; not_found: 404;
# not_ready: 503 or nothing served yet; rate_limited: 429; rejected: other 4xx; upstream_error: 5xx or
# an error inside the stream; stream_cut: ended before the answer was complete; bad_response: not the protocol.
ErrorKind = Literal[
    "unreachable", "timeout", "not_found", "not_ready", "rate_limited", "rejected", "upstream_error",
    "stream_cut", "bad_response",
]  # fmt: skip
ChatMessage = Mapping[str, Any]  # {"role": "user", "content": "..."} as in the OpenAI API
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


def status_error(status: int, body: bytes, endpoint: Endpoint, *, model: str | None = None) -> ChatError:
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


def transport_error(
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


def json_object(raw: bytes | str, what: str) -> dict[str, Any]:
    try:
        data = json.loads(raw)
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise ChatError("bad_response", f"The model server sent something that is not {what}.")
    return data


def parse_models(body: bytes) -> tuple[ModelInfo, ...]:
    entries = json_object(body, "a model list").get("data")
    if not isinstance(entries, list) or not all(isinstance(e, dict) and isinstance(e.get("id"), str) for e in entries):
        raise ChatError("bad_response", "The model server's /v1/models answer has no model ids.")
    keys = ("id", "owned_by", "root", "parent", "max_model_len")
    return tuple(ModelInfo(**{k: e.get(k) for k in keys}) for e in entries)


def usage_from(data: Any) -> Usage | None:
    if not isinstance(data, dict):
        return None
    return Usage(data.get("prompt_tokens"), data.get("completion_tokens"), data.get("total_tokens"))


# Only CR, LF and CRLF end a line in SSE. str.splitlines (and so httpx's aiter_lines) also splits on
# U+2028, U+0085 ..., which servers emit raw inside JSON strings: splitting there corrupts the data.
_LINE_END = re.compile(rb"\r\n|\r|\n")
MAX_LINE_BYTES = 4 * 1024 * 1024  # a line this long is not an event stream; stop before memory runs out
# KAITO <= 0.8 defaults max_length to 200 *including the prompt*, which leaves a longer conversation
# no room to answer; max_new_tokens is accepted (GenerateKwargs allows extra keys) and takes precedence.
LEGACY_MAX_NEW_TOKENS = 512


class SSEError(ValueError):
    """The byte stream is not a usable event stream."""


@dataclass(frozen=True)
class SSEEvent:
    data: str
    event: str = "message"
    id: str | None = None
    retry: int | None = None


class SSEParser:
    """Incremental parser (WHATWG HTML "Parsing an event stream"); an unterminated event at EOF is dropped."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._data: list[str] = []
        self._event = ""
        self._last_id: str | None = None
        self._retry: int | None = None
        self._started = False

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        self._buffer += chunk
        events: list[SSEEvent] = []
        start = 0
        while match := _LINE_END.search(self._buffer, start):
            # A CR as the last byte may be the first half of a CRLF split across two reads.
            if match.group() == b"\r" and match.end() == len(self._buffer):
                break
            event = self._line(bytes(self._buffer[start : match.start()]))
            if event is not None:
                events.append(event)
            start = match.end()
        del self._buffer[:start]
        if len(self._buffer) > MAX_LINE_BYTES:
            raise SSEError(f"an event-stream line is longer than {MAX_LINE_BYTES} bytes")
        return events

    def _line(self, raw: bytes) -> SSEEvent | None:
        line = raw.decode("utf-8", errors="replace")  # lines end on ASCII bytes, so never inside a character
        if not self._started:
            self._started = True
            line = line.removeprefix("\ufeff")
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None  # comment, e.g. a keep-alive ping
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id" and "\0" not in value:
            self._last_id = value
        elif name == "retry" and value.isascii() and value.isdigit():
            self._retry = int(value)
        return None

    def _dispatch(self) -> SSEEvent | None:
        data, event = self._data, self._event
        self._data, self._event = [], ""
        if not data:
            return None
        return SSEEvent(data="\n".join(data), event=event or "message", id=self._last_id, retry=self._retry)


def server_message(body: bytes) -> str:
    """The server's own words: OpenAI/vLLM `error.message`, FastAPI `detail`, Kubernetes Status `message`."""
    text = body.decode("utf-8", errors="replace").strip()
    try:
        data = json.loads(text)
    except ValueError:
        return text[:300]  # e.g. a proxy's HTML error page: its start is still more honest than nothing
    if isinstance(data, dict):
        error = data.get("error")
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
        if isinstance(error, str) and error:
            return error
        for key in ("message", "detail"):
            value = data.get(key)
            if isinstance(value, str) and value:
                return value
            if isinstance(value, list) and value:  # FastAPI's 422 list of problems
                return "; ".join(str(v.get("msg", v)) if isinstance(v, dict) else str(v) for v in value)
    return text[:300]


def message_text(content: Any) -> str:
    if isinstance(content, list):  # OpenAI content parts: keep the text ones
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return "" if content is None else str(content)


def render_prompt(messages: Sequence[Mapping[str, Any]]) -> str:
    """The conversation as one prompt for the legacy text-generation pipeline, which has no chat template."""
    turns = [(str(m.get("role") or "user"), message_text(m.get("content"))) for m in messages]
    if len(turns) == 1 and turns[0][0] == "user":
        return turns[0][1]  # a single question goes as is, like KAITO's own `curl /chat` example
    return "\n".join(f"{role.capitalize()}: {text}" for role, text in turns) + "\nAssistant:"


def legacy_request_body(
    messages: Sequence[Mapping[str, Any]],
    *,
    temperature: float | None = None,
    top_p: float | None = None,
    max_tokens: int | None = None,
) -> dict[str, Any]:
    """POST /chat body of KAITO <= 0.8 (UnifiedRequestModel) for an OpenAI-style conversation."""
    kwargs: dict[str, Any] = {"max_new_tokens": max_tokens or LEGACY_MAX_NEW_TOKENS}
    if temperature == 0:
        kwargs["do_sample"] = False  # transformers refuses temperature 0 when sampling; 0 means greedy
    elif temperature is not None:
        kwargs["temperature"] = temperature
    if top_p is not None:
        kwargs["top_p"] = top_p
    # return_full_text defaults to true there and would repeat the prompt in front of the answer.
    return {"prompt": render_prompt(messages), "return_full_text": False, "generate_kwargs": kwargs}


def openai_error(message: str, kind: str, code: int) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


def legacy_as_openai(text: str, *, model: str | None, stream: bool) -> bytes:
    """A legacy /chat answer as a chat.completion object, or as one SSE chunk with the whole text + [DONE].

    The legacy API reports neither a finish reason nor token counts: "stop" says the server finished by
    itself, and usage stays null rather than invented.
    """
    base = {"id": f"chatcmpl-legacy-{uuid.uuid4().hex}", "created": int(time.time()), "model": model}
    if not stream:
        choice = {
            "index": 0,
            "message": {"role": "assistant", "content": text},
            "logprobs": None,
            "finish_reason": "stop",
        }
        return json.dumps({**base, "object": "chat.completion", "choices": [choice], "usage": None}).encode()
    frames = [
        {
            **base,
            "object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": reason}],
        }
        for delta, reason in (({"role": "assistant", "content": text}, None), ({}, "stop"))
    ]
    return "".join(f"data: {json.dumps(frame)}\n\n" for frame in frames).encode() + b"data: [DONE]\n\n"
