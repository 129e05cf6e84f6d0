"""Shared by the chat client tests: the model stand-in fixtures and small helpers over workspaces.chat."""

import asyncio
import time
from contextlib import aclosing, asynccontextmanager

import pytest
from aiohttp import web

from devcluster.model_standin import DEFAULT_MODEL, ModelStandin
from workspaces import chat

BASE = DEFAULT_MODEL
HELLO = [{"role": "user", "content": "hello there"}]


async def wait_for(standin, predicate, timeout=3.0):
    """Poll the stand-in's counters until predicate(stats) holds; return the stats (assert on failure)."""
    deadline = time.monotonic() + timeout
    while True:
        stats = standin.stats()
        if predicate(stats):
            return stats
        if time.monotonic() > deadline:
            raise AssertionError(f"stand-in never reached the expected state: {stats}")
        await asyncio.sleep(0.02)


def all_closed(stats):
    return stats["open_streams"] == 0 and stats["open_requests"] == 0 and stats["open_connections"] == 0


async def collect(endpoint, **kwargs):
    kwargs.setdefault("protocol", "openai")
    kwargs.setdefault("model", BASE)
    kwargs.setdefault("messages", HELLO)
    async with aclosing(chat.stream_chat(endpoint, **kwargs)) as events:
        return [event async for event in events]


async def chat_error(endpoint, **kwargs):
    seen = []
    with pytest.raises(chat.ChatError) as info:
        async with aclosing(
            chat.stream_chat(endpoint, **{"protocol": "openai", "model": BASE, "messages": HELLO, **kwargs})
        ) as events:
            async for event in events:
                seen.append(event)
    return info.value, seen


def texts(events, kind=chat.TextDelta):
    return [e.text for e in events if isinstance(e, kind)]


@asynccontextmanager
async def tiny_app(routes):
    """A throwaway aiohttp server for shapes the stand-in does not play (API-server proxy errors, junk)."""
    app = web.Application()
    for method, path, handler in routes:
        app.router.add_route(method, path, handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@pytest.fixture(name="standin")
async def standin_fixture():
    async with ModelStandin(adapters=["my-adapter"]) as server:
        yield server


@pytest.fixture(name="legacy")
async def legacy_fixture():
    async with ModelStandin(protocol="legacy") as server:
        yield server
