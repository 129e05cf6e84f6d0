"""Chat test helpers and fixtures: the model stand-in, READY workspaces, API tokens, cookies, WebSocket helpers."""

import asyncio
import json

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.core.cache import cache
from django.test import Client

from catalog.models import Preset
from devcluster.model_standin import DEFAULT_MODEL, ModelStandin
from portal.asgi import application
from portal.services import token_create
from workspaces.models import Status, WorkspaceRequest

BASE = DEFAULT_MODEL
ADAPTER = "phi-3-support-adapter"
ORIGIN = (b"origin", b"http://testserver")


@pytest.fixture(autouse=True)
def _chat_settings(settings):
    # A private local-memory cache: the rate-limit counters of one test never reach another (nor Redis in CI).
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "chat"}}
    settings.CHAT_RATE_PER_MINUTE = 1000
    settings.CHAT_READ_TIMEOUT = 10
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def standin(settings):
    """An OpenAI-compatible (vLLM) stand-in with one adapter, in its own thread, behind KAITO_INFERENCE_URL."""
    with ModelStandin(adapters=[ADAPTER]) as server:
        settings.KAITO_INFERENCE_URL = server.url
        yield server


@pytest.fixture
def legacy_standin(settings):
    with ModelStandin(protocol="legacy") as server:
        settings.KAITO_INFERENCE_URL = server.url
        yield server


@pytest.fixture
def preset(db):
    return Preset.objects.create(name="microsoft/Phi-3-mini-128k-instruct", served_name=BASE, source="test")


def make_workspace(team, requester, preset, *, name="phi-chat", status=Status.READY, kind="inference"):
    return WorkspaceRequest.objects.create(
        team=team, requester=requester, kind=kind, name=name, namespace=team.namespace, preset=preset, hours=8,
        status=status, status_message="Waiting for a GPU node." if status == Status.PROVISIONING else "",
    )  # fmt: skip


@pytest.fixture
def workspace(team, requester, preset):
    return make_workspace(team, requester, preset)


@pytest.fixture
def token(requester):
    return token_create(user=requester, name="tests")[1]


def session_cookie(user):
    client = Client()
    client.force_login(user)
    return f"sessionid={client.cookies['sessionid'].value}".encode()


async def ws_connect(user, path, *, origin=ORIGIN):
    headers = [origin] if origin else []
    if user is not None:
        headers.append((b"cookie", await sync_to_async(session_cookie)(user)))
    communicator = WebsocketCommunicator(application, path, headers=headers)
    connected, code = await communicator.connect(timeout=5)
    return communicator, connected, code


def chat_message(prompt, *, model=BASE, conversation="", action="send", **extra):
    """What htmx's ws-send sends for the chat form: every field as a string, plus HEADERS."""
    data = {"conversation": conversation, "prompt": prompt, "model": model, "system_prompt": "",
            "temperature": "0.7", "top_p": "1", "max_tokens": "512", "action": action,
            "csrfmiddlewaretoken": "x", "HEADERS": {"HX-Request": "true"}}  # fmt: skip
    data.update(extra)
    return json.dumps(data)


async def receive_until(communicator, done, *, timeout=10):
    """Frames until one satisfies `done` (included); the model picker's frame may come in between."""
    frames = []
    while True:
        frame = await communicator.receive_from(timeout=timeout)
        frames.append(frame)
        if done(frame):
            return frames


def is_turn_end(frame):
    return frame.lstrip().startswith("<article")


async def wait_closed(standin, timeout=3.0):
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        stats = standin.stats()
        if stats["open_streams"] == 0 and stats["open_requests"] == 0:
            return stats
        assert asyncio.get_running_loop().time() < deadline, stats
        await asyncio.sleep(0.05)
