"""The in-memory channel layer delivers to a consumer's loop from a plain thread (the in-process reconciler)."""

import asyncio
import threading
import time

from asgiref.sync import async_to_sync

from portal.layers import ThreadSafeInMemoryChannelLayer


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
