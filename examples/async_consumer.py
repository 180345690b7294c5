"""An asyncio service consuming events that sync worker processes produce.

The consumer awaits get_async(): it costs nothing while idle and wakes as soon as an event
arrives, while the event loop keeps serving other tasks (here: a heartbeat).

    python examples/async_consumer.py
"""

from __future__ import annotations

import asyncio
import os
import time
from multiprocessing import get_context

from shared_queue import SharedMemoryQueue

N_PRODUCERS, N_EVENTS = 3, 50


def producer(events: SharedMemoryQueue, worker: int) -> None:
    for i in range(N_EVENTS):
        events.put({"worker": worker, "seq": i, "sent": time.perf_counter()})
        time.sleep(0.002)
    events.put(None)  # done
    events.close()


async def heartbeat(stop: asyncio.Event) -> int:
    beats = 0
    while not stop.is_set():
        await asyncio.sleep(0.01)
        beats += 1
    return beats


async def consume(events: SharedMemoryQueue) -> None:
    stop = asyncio.Event()
    beat = asyncio.create_task(heartbeat(stop))
    latencies = []
    running = N_PRODUCERS
    while running:
        # The timeout only bounds a wait for a producer that died: Empty ends the demo.
        event = await events.get_async(timeout=30)
        if event is None:  # a producer is done
            running -= 1
            continue
        latencies.append(time.perf_counter() - event["sent"])
    stop.set()
    latencies.sort()
    print(
        f"received {len(latencies)} events; median latency "
        f"{latencies[len(latencies) // 2] * 1e6:.0f} us; the loop kept beating "
        f"({await beat} heartbeats)"
    )


def main() -> None:
    events = SharedMemoryQueue(
        "events", create=True, capacity=256, item_size=512, run_id=f"async_demo_{os.getpid()}"
    )
    procs = [
        get_context("spawn").Process(target=producer, args=(events, w)) for w in range(N_PRODUCERS)
    ]
    try:
        for p in procs:
            p.start()
        asyncio.run(consume(events))
        for p in procs:
            p.join(30)
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
        events.unlink()
        events.close()


if __name__ == "__main__":
    main()
