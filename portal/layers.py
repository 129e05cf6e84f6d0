"""The channel layers: in-memory made safe for senders on other threads, and Redis with safe socket timeouts."""

from __future__ import annotations

import asyncio
from typing import Any

from channels.layers import InMemoryChannelLayer

# channels_redis waits up to 5 s in BZPOPMIN for the next message; redis-py 8 gives every socket a 5 s read
# timeout by default, so an idle consumer's wait raced it, lost, and the WebSocket closed mid-answer.
REDIS_SOCKET_TIMEOUT = 30


def redis_channel_layer(url: str) -> dict[str, Any]:
    """The CHANNEL_LAYERS entry for Redis at `url`, with reads allowed to outlast the layer's blocking wait."""
    host = {"address": url, "socket_timeout": REDIS_SOCKET_TIMEOUT, "socket_connect_timeout": 5}
    return {"BACKEND": "channels_redis.core.RedisChannelLayer", "CONFIG": {"hosts": [host]}}


class ThreadSafeInMemoryChannelLayer(InMemoryChannelLayer):
    """Delivers on the receiver's event loop when the sender runs on another one.

    Channels' in-memory layer keeps one asyncio.Queue per channel, and asyncio queues are not thread-safe:
    a message put from a thread with its own loop (the reconciler, a background apply) never wakes the
    consumer waiting in the server's loop. `make run` serves the web and the reconciler in one process on
    this layer; with REDIS_URL set the Redis layer is used instead and this class is not involved.
    """

    async def send(self, channel: str, message: dict[str, Any]) -> None:
        queue = self.channels.get(channel)
        owner = getattr(queue, "_loop", None)  # set once a receiver has awaited the queue
        if owner is not None and owner is not asyncio.get_running_loop() and owner.is_running():
            future = asyncio.run_coroutine_threadsafe(super().send(channel, message), owner)
            await asyncio.wrap_future(future)
            return
        await super().send(channel, message)
