"""Structured logs: one JSON object per line with the request id, and a request-id middleware."""

from __future__ import annotations

import contextvars
import datetime as dt
import json
import logging
import re
import uuid
from collections.abc import Awaitable
from typing import Any

from asgiref.sync import iscoroutinefunction
from django.http import HttpRequest, HttpResponse

from portal.middleware import HybridMiddleware

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="")
# A client-supplied X-Request-ID is kept only when it looks like an id (an ingress usually sets one).
_VALID_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
# The portal never logs credentials; these patterns are a second line of defence for third-party messages.
_SCRUB = [
    (re.compile(r"(?i)(bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,}"), r"\1 [redacted]"),
    (re.compile(r"\bkp_[A-Za-z0-9_-]{8,}"), "kp_[redacted]"),
    (
        re.compile(r"(?i)((?:password|passwd|secret|token|client_secret)[\"']?\s*[=:]\s*[\"']?)[^\s\"'&,}]+"),
        r"\1[redacted]",
    ),
]
# LogRecord attributes that are not "extra" fields.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName"}


def scrub(text: str) -> str:
    for pattern, replacement in _SCRUB:
        text = pattern.sub(replacement, text)
    return text


def _plain(value: Any) -> Any:
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)


class JsonFormatter(logging.Formatter):
    """ts, level, logger, message, request_id, exc, and the record's `extra` fields; one line each."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": scrub(record.getMessage()),
        }
        request_id = request_id_var.get()
        if request_id:
            entry["request_id"] = request_id
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_") and key not in entry:
                entry[key] = _plain(value)
        if record.exc_info:
            entry["exc"] = scrub(self.formatException(record.exc_info))
        return json.dumps(entry, ensure_ascii=False)


class RequestIdMiddleware(HybridMiddleware):
    """Sets the request id for the logs of this request and returns it as X-Request-ID."""

    @staticmethod
    def _start(request: HttpRequest) -> contextvars.Token[str]:
        given = request.headers.get("X-Request-ID", "")
        request.request_id = given if _VALID_ID.match(given) else uuid.uuid4().hex
        return request_id_var.set(request.request_id)

    def __call__(self, request: HttpRequest) -> HttpResponse | Awaitable[HttpResponse]:
        if iscoroutinefunction(self):
            return self._acall(request)
        token = self._start(request)
        try:
            response = self.get_response(request)
            response["X-Request-ID"] = request.request_id
            return response
        finally:
            request_id_var.reset(token)

    async def _acall(self, request: HttpRequest) -> HttpResponse:
        token = self._start(request)
        try:
            response = await self.get_response(request)
            response["X-Request-ID"] = request.request_id
            return response
        finally:
            request_id_var.reset(token)
