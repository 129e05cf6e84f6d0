"""Chat access for the page, its WebSocket and the API alike: who may chat, where the model is, how often."""

from __future__ import annotations

import asyncio
import dataclasses
import time
import weakref

import httpx
from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.core.cache import cache

from workspaces import chat
from workspaces.chat import ChatError, Endpoint, ModelInfo, Protocol
from workspaces.cluster import ClusterError
from workspaces.models import Status, WorkspaceRequest
from workspaces.services.clusters import get_cluster
from workspaces.services.lifecycle import can_view

_NOT_READY = {
    Status.PENDING_APPROVAL: "The workspace is waiting for approval; chat opens once it is approved and ready.",
    Status.APPROVED: "The workspace was approved and is being created; chat opens when it is ready.",
    Status.PROVISIONING: "The workspace is provisioning; chat opens when it is ready.",
    Status.FAILED: "The workspace failed, so no model is serving; see its page for why.",
}
# One pool per model endpoint and event loop: streams reuse connections, and a loop never sees another's.
_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[tuple[str, str, object], httpx.AsyncClient]] = (
    weakref.WeakKeyDictionary()
)
# What chat code reads of a request: loading only these makes the check, repeated on every message, cheap.
# Reading another field of the object from async code would be a query there, which Django refuses.
CHAT_FIELDS = (
    "id", "name", "namespace", "kind", "status", "status_message", "chat_protocol", "team_id",
    "preset__id", "preset__name", "preset__served_name",
)  # fmt: skip
MAX_UPSTREAM_CONNECTIONS = 1024  # above KAITO's default max-num-seqs (256): the model's queue decides, not us


class ChatRefused(Exception):
    """This user may not chat with this workspace now; `status` is the HTTP answer, `message` says why."""

    def __init__(self, status: int, message: str, kind: str) -> None:
        super().__init__(message)
        self.status, self.message, self.kind = status, message, kind


class RateLimited(Exception):
    def __init__(self, limit: int, retry_after: int) -> None:
        self.limit, self.retry_after = limit, retry_after
        self.message = (
            f"Too many chat requests: at most {limit} a minute per user (the chat page and the API count "
            f"together). Try again in {retry_after} s."
        )
        super().__init__(self.message)


def not_ready_message(request: WorkspaceRequest) -> str:
    said = _NOT_READY.get(request.status)
    if said is None:
        said = f"The workspace is {request.get_status_display().lower()}; there is no model to chat with any more."
    if request.status == Status.PROVISIONING and request.status_message:
        said += f" Now: {request.status_message}"
    return said


def chat_target(*, user: AbstractBaseUser | AnonymousUser, request_id: int) -> WorkspaceRequest:
    """The request if `user` may chat with its model now, else ChatRefused: the one rule for page, socket and API."""
    if not user.is_authenticated:
        raise ChatRefused(401, "Sign in, or send a portal API token as 'Authorization: Bearer kp_…'.", "unauthorized")
    obj = WorkspaceRequest.objects.select_related("preset").only(*CHAT_FIELDS).filter(pk=request_id).first()
    if obj is None or not can_view(user, obj):
        # The same answer for "does not exist" and "another team's": ids do not reveal what exists.
        raise ChatRefused(404, "No such workspace among your teams' workspaces.", "not_found")
    if obj.kind != WorkspaceRequest.Kind.INFERENCE:
        message = (
            "This is a fine-tuning workspace: it trains an adapter and serves no model. Deploy the adapter in an "
            "inference workspace to chat with it."
        )
        raise ChatRefused(409, message, "not_inference")
    if obj.status != Status.READY:
        raise ChatRefused(409, not_ready_message(obj), "not_ready")
    return obj


def chat_endpoint(*, request: WorkspaceRequest) -> Endpoint:
    """Where the workspace's model answers (sync: may connect to the cluster). ChatError if unknown."""
    template = settings.KAITO_INFERENCE_URL
    if template:
        # The development/test override needs no cluster connection at all.
        endpoint = Endpoint(base_url=template.format(name=request.name, namespace=request.namespace))
    else:
        try:
            endpoint = get_cluster().inference_endpoint(request.namespace, request.name)
        except ClusterError as exc:
            message = f"The portal cannot reach the cluster to find the model: {exc.message}"
            raise ChatError("unreachable", message) from exc
    return dataclasses.replace(
        endpoint,
        connect_timeout=float(getattr(settings, "CHAT_CONNECT_TIMEOUT", 5.0)),
        read_timeout=float(getattr(settings, "CHAT_READ_TIMEOUT", 120.0)),
    )


async def achat_endpoint(*, request: WorkspaceRequest) -> Endpoint:
    return await sync_to_async(chat_endpoint)(request=request)


def shared_client(endpoint: Endpoint) -> httpx.AsyncClient:
    """The connection pool for this endpoint in the running event loop (created on first use, never closed)."""
    per_loop = _clients.setdefault(asyncio.get_running_loop(), {})
    key = (endpoint.base_url, repr(endpoint.verify), endpoint.cert)
    client = per_loop.get(key)
    if client is None or client.is_closed:
        client = per_loop[key] = chat.make_client(endpoint, max_connections=MAX_UPSTREAM_CONNECTIONS)
    return client


async def _remember(request: WorkspaceRequest, protocol: Protocol | str) -> None:
    if request.chat_protocol != protocol:
        request.chat_protocol = protocol
        await WorkspaceRequest.objects.filter(pk=request.pk).aupdate(chat_protocol=protocol)


async def chat_protocol(*, request: WorkspaceRequest, endpoint: Endpoint) -> Protocol:
    """The protocol remembered on the request, or detected now and remembered."""
    if request.chat_protocol in ("openai", "legacy"):
        return request.chat_protocol  # type: ignore[return-value]
    detection = await chat.detect_protocol(endpoint, client=shared_client(endpoint))
    await _remember(request, detection.protocol)
    return detection.protocol


async def protocol_forget(*, request: WorkspaceRequest) -> None:
    """After a 404 the server may have changed (an upgraded KAITO): detect again next time."""
    await _remember(request, "")


@dataclasses.dataclass(frozen=True)
class ModelChoices:
    protocol: Protocol | None
    models: tuple[ModelInfo, ...]  # base model first, then the adapters
    error: ChatError | None = None


async def model_choices(*, request: WorkspaceRequest) -> ModelChoices:
    """What the model picker offers: /v1/models when the server has it, the preset's name for legacy /chat."""
    fallback = (ModelInfo(id=request.preset.served_name),)
    try:
        endpoint = await achat_endpoint(request=request)
        if request.chat_protocol == "legacy":
            return ModelChoices("legacy", fallback)
        detection = await chat.detect_protocol(endpoint, client=shared_client(endpoint))
    except ChatError as exc:
        return ModelChoices(None, fallback, exc)
    await _remember(request, detection.protocol)
    models = tuple(sorted(detection.models, key=lambda m: m.is_adapter)) or fallback
    return ModelChoices(detection.protocol, models)


def _rate_limit() -> int:
    return int(getattr(settings, "CHAT_RATE_PER_MINUTE", 30))


def chat_rate_take(*, user_id: int, cost: int = 1) -> None:
    """Count `cost` chat requests for this user in the current minute; RateLimited once over the limit.

    A fixed one-minute window in Django's cache (atomic incr in Redis and in the local-memory cache). Each
    process has its own local-memory cache, so several web replicas need a shared cache (REDIS_URL).
    """
    limit = _rate_limit()
    if limit <= 0:
        return
    now = time.time()
    key = f"chat-rate:{user_id}:{int(now // 60)}"
    cache.add(key, 0, timeout=120)
    try:
        count = cache.incr(key, cost)
    except ValueError:  # expired between add and incr
        cache.add(key, cost, timeout=120)
        count = cost
    if count > limit:
        raise RateLimited(limit, max(1, 60 - int(now % 60)))


async def achat_rate_take(*, user_id: int, cost: int = 1) -> None:
    await sync_to_async(chat_rate_take)(user_id=user_id, cost=cost)
