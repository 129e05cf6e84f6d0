"""Channel layers: in-memory delivers across threads (the in-process reconciler); Redis receivers survive idle waits."""

import asyncio
import os
import shutil
import subprocess
import threading
import time

import pytest
from asgiref.sync import async_to_sync
from channels_redis.core import RedisChannelLayer

from devcluster.procs import free_port, port_free, stop_child
from portal.layers import ThreadSafeInMemoryChannelLayer, redis_channel_layer


def test_group_send_from_another_thread_wakes_the_receiver():
    layer = ThreadSafeInMemoryChannelLayer()
    ready, received = threading.Event(), []
    loop = asyncio.new_event_loop()

    async def receive():
        channel = await layer.new_channel()
        await layer.group_add("requests.team.1", channel)
        ready.set()
        received.append(await asyncio.wait_for(layer.receive(channel), timeout=5))

    receiver = threading.Thread(target=loop.run_until_complete, args=(receive(),))
    receiver.start()
    assert ready.wait(5)
    time.sleep(0.05)  # the receiver now waits on its queue, bound to its own loop
    sender = threading.Thread(target=async_to_sync(layer.group_send), args=("requests.team.1", {"type": "x"}))
    sender.start()
    sender.join(5)
    receiver.join(5)
    loop.close()
    assert received == [{"type": "x"}]


@pytest.fixture
def redis_url(tmp_path):
    """REDIS_URL when the run has one (CI's second pass), else a throwaway redis-server on 127.0.0.1."""
    if os.environ.get("REDIS_URL"):
        yield os.environ["REDIS_URL"]
        return
    server = shutil.which("redis-server")
    if server is None:
        # A developer's machine may lack Redis; CI installs it (.ci/run), so there a missing server is a failure.
        missing = "no REDIS_URL and no redis-server (apt-get install redis-server; .ci/run installs it)"
        if os.environ.get("CI"):
            pytest.fail(missing, pytrace=False)
        pytest.skip(missing)
    port = free_port()
    proc = subprocess.Popen(
        [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while port_free(port):
            assert time.monotonic() < deadline and proc.poll() is None, "redis-server did not start"
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        stop_child(proc)


def test_a_redis_receiver_outlives_idle_waits_longer_than_the_blocking_pop(redis_url):
    # The chat consumer waits on its channel while an answer streams; with redis-py 8's default 5 s socket
    # timeout that wait raised "Timeout reading from …" after about 5 s and Daphne closed the WebSocket.
    layer = RedisChannelLayer(**redis_channel_layer(redis_url)["CONFIG"])

    async def scenario():
        channel = await layer.new_channel()

        async def later():
            await asyncio.sleep(layer.brpop_timeout + 2)
            await layer.send(channel, {"type": "late"})

        sender = asyncio.create_task(later())
        try:
            return await asyncio.wait_for(layer.receive(channel), timeout=layer.brpop_timeout + 10)
        finally:
            await sender
            await layer.flush()

    assert asyncio.run(scenario()) == {"type": "late"}
