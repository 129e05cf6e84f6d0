"""OpenAI-compatible endpoint per workspace (/api/workspaces/<id>/v1/...), relayed to its model byte for byte."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from asgiref.sync import sync_to_async
from django.contrib.auth.decorators import login_not_required
from django.contrib.auth.models import AbstractBaseUser
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.middleware.csrf import CsrfViewMiddleware
from django.views.decorators.csrf import csrf_exempt

from portal import metrics
from portal.services import token_user
from workspaces import chat
from workspaces.chat import ChatError, RelayBody
from workspaces.chat_formats import openai_error
from workspaces.models import WorkspaceRequest
from workspaces.services import chat_access
from workspaces.services.chat_access import ChatRefused, RateLimited

# Async views rather than DRF (which has no async views): a streamed answer must not hold a worker thread.
# Errors answer in OpenAI's error JSON, so that the `openai` client raises the matching exception.

_UPSTREAM_KINDS = {404: "not_found", 429: "rate_limited", 503: "not_ready"}
NO_TOKEN = (
    "Send your portal API token as 'Authorization: Bearer kp_…' (create one on your profile page, /accounts/profile/)."
)


class ApiError(Exception):
    def __init__(self, status: int, message: str, kind: str, *, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.kind, self.retry_after = status, message, kind, retry_after

    def response(self) -> JsonResponse:
        response = JsonResponse(openai_error(self.message, self.kind, self.status), status=self.status)
        if self.status == 401:
            response["WWW-Authenticate"] = 'Bearer realm="kaito-portal"'
        if self.retry_after is not None:
            response["Retry-After"] = str(self.retry_after)
        return response


def _csrf_refusal(request: HttpRequest) -> HttpResponse | None:
    # A browser session may use the endpoint too, but then a POST needs the CSRF token like any form.
    return CsrfViewMiddleware(lambda r: HttpResponse()).process_view(request, None, (), {})


def _resolve(
    *, raw: str | None, user: AbstractBaseUser | None, pk: int, count: bool
) -> tuple[WorkspaceRequest, chat.Endpoint]:
    """Token, access, endpoint and rate limit in one trip to a worker thread: each trip costs under load."""
    if raw is not None:
        user = token_user(raw=raw)
        if user is None:
            raise ApiError(401, "Invalid or revoked API token.", "authentication_error")
    if user is None:  # neither a token nor a session: _target answers 401 before this
        raise ApiError(401, NO_TOKEN, "authentication_error")
    try:
        obj = chat_access.chat_target(user=user, request_id=pk)
    except ChatRefused as refused:
        raise ApiError(refused.status, refused.message, refused.kind) from None
    endpoint = chat_access.chat_endpoint(request=obj)
    if count:
        try:
            chat_access.chat_rate_take(user_id=user.pk)
        except RateLimited as limited:
            raise ApiError(429, limited.message, "rate_limit_error", retry_after=limited.retry_after) from None
    return obj, endpoint


async def _target(request: HttpRequest, pk: int, *, count: bool = False) -> tuple[WorkspaceRequest, chat.Endpoint]:
    """The workspace this request may use, and where its model answers; ApiError (or ChatError) otherwise."""
    header = request.headers.get("Authorization", "")
    raw, user = None, None
    if header:
        scheme, _, raw = header.partition(" ")
        if scheme.lower() not in ("bearer", "token") or not raw.strip():
            raise ApiError(401, "The Authorization header must be 'Bearer <token>'.", "authentication_error")
        raw = raw.strip()
    else:
        user = await request.auser()
        if not user.is_authenticated:
            raise ApiError(401, NO_TOKEN, "authentication_error")
        if request.method == "POST" and _csrf_refusal(request) is not None:
            message = "A browser session must send the CSRF token; scripts use an API token."
            raise ApiError(403, message, "permission_error")
    return await sync_to_async(_resolve)(raw=raw, user=user, pk=pk, count=count)


class _RelayedBody:
    """The relayed body, counted as an open chat stream until it ends or is closed; closes like RelayBody.

    A model that fails mid-answer must not look like a finished answer, and an exception would not do: Daphne
    keeps the client's connection open after an application error once the response has started. So an event
    stream ends with an error event (what vLLM sends itself; the openai client raises APIError on it), and any
    other body simply stops short, which its client cannot parse as complete JSON.
    """

    def __init__(self, body: RelayBody, *, event_stream: bool) -> None:
        self._body, self._event_stream = body, event_stream
        self._open, self._failed = True, False
        metrics.chat_stream_opened()

    def _done(self) -> None:
        if self._open:
            self._open = False
            metrics.chat_stream_closed()

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self

    async def __anext__(self) -> bytes:
        if self._failed:
            raise StopAsyncIteration
        try:
            return await self._body.__anext__()
        except ChatError as err:
            metrics.upstream_error(err.kind)
            self._done()
            self._failed = True
            if not self._event_stream:
                raise StopAsyncIteration from err
            # The blank lines first end whatever frame the model left unfinished.
            return b"\n\ndata: " + json.dumps(err.openai_error()).encode() + b"\n\n"
        except BaseException:
            self._done()
            raise

    async def aclose(self) -> None:
        self._done()
        await self._body.aclose()

    def close(self) -> None:
        self._done()
        self._body.close()


def _relay(upstream: chat.UpstreamResponse, *, metered: bool) -> StreamingHttpResponse:
    if upstream.status >= 400:
        metrics.upstream_error(_UPSTREAM_KINDS.get(upstream.status, "upstream_error"))
    event_stream = upstream.headers.get("content-type", "").startswith("text/event-stream")
    answering = metered and upstream.status < 400
    body: Any = _RelayedBody(upstream.body, event_stream=event_stream) if answering else upstream.body
    response = StreamingHttpResponse(body, status=upstream.status, headers=upstream.headers)
    response["X-Accel-Buffering"] = "no"  # a proxy in front must not hold the stream back
    return response


async def _forward(
    obj: WorkspaceRequest, endpoint: chat.Endpoint, method: str, path: str, body: Any, *, metered: bool
) -> HttpResponse:
    """Send the request on to the workspace's model and relay its answer; a failure to reach it in OpenAI's shape."""
    try:
        protocol = await chat_access.chat_protocol(request=obj, endpoint=endpoint)
        upstream = await chat.open_upstream(
            endpoint, method, path, body, protocol=protocol, client=chat_access.shared_client(endpoint),
            served_model=obj.preset.served_name,
        )  # fmt: skip
    except ChatError as err:
        metrics.upstream_error(err.kind)
        return JsonResponse(err.openai_error(), status=err.http_status)
    return _relay(upstream, metered=metered)


def _method_not_allowed(allowed: str) -> JsonResponse:
    response = JsonResponse(openai_error(f"Use {allowed}.", "invalid_request_error", 405), status=405)
    response["Allow"] = allowed
    return response


@login_not_required  # authenticated by API token (or session) below, answering 401 in OpenAI's shape
@csrf_exempt
async def models(request: HttpRequest, pk: int) -> HttpResponse:
    """GET: the model ids the workspace serves, the base model and its adapters."""
    if request.method != "GET":
        return _method_not_allowed("GET")
    try:
        obj, endpoint = await _target(request, pk)
        return await _forward(obj, endpoint, "GET", "/v1/models", None, metered=False)
    except ApiError as err:
        return err.response()


@login_not_required
@csrf_exempt
async def chat_completions(request: HttpRequest, pk: int) -> HttpResponse:
    """POST: a chat completion, streamed (`"stream": true`) or whole, exactly as the model answers it."""
    if request.method != "POST":
        return _method_not_allowed("POST")
    try:
        try:
            body = json.loads(request.body or b"null")
        except ValueError:
            body = None
        # Who and what first (401/404/409 before 400); a malformed body is not counted against the limit.
        obj, endpoint = await _target(request, pk, count=isinstance(body, dict))
        if not isinstance(body, dict):
            raise ApiError(400, "The body must be a JSON object (a chat completion request).", "invalid_request_error")
        return await _forward(obj, endpoint, "POST", chat.CHAT_PATH, body, metered=True)
    except ApiError as err:
        return err.response()
