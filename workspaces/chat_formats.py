"""Wire formats of KAITO's model APIs, no I/O: SSE parsing, error texts, legacy /chat and OpenAI shapes."""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

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
