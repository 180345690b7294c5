"""The quick start, for ``python -m shared_queue demo``: three workers drain a task queue."""

from __future__ import annotations

import os
from multiprocessing import get_context

from ._async import SharedMemoryQueue
from ._errors import Empty


def _worker(queue_name: str, run_id: str, worker_id: int) -> None:
    tasks = SharedMemoryQueue(name=queue_name, create=False, run_id=run_id)
    while True:
        try:
            task = tasks.get(timeout=1.0)
        except Empty:
            continue
        if task == "STOP":
            break
        # One write per line (end="" with the newline in the text): workers share stdout, and
        # under PYTHONUNBUFFERED print's separate newline write could land in another's line.
        print(f"worker {worker_id} processing {task}\n", end="", flush=True)
    tasks.close()


def main() -> None:
    """Create a queue, start three workers, feed them 20 tasks, stop them, clean up."""
    run_id = f"demo_{os.getpid()}"
    tasks = SharedMemoryQueue(name="tasks", create=True, capacity=100, run_id=run_id)
    workers = [
        get_context("spawn").Process(target=_worker, args=("tasks", run_id, i)) for i in range(3)
    ]
    try:
        for p in workers:
            p.start()
        for i in range(20):
            tasks.put(f"task_{i}")
        for _ in workers:
            tasks.put("STOP")
        for p in workers:
            p.join(30)
        print(f"final queue size: {tasks.qsize()}; metrics: {tasks.get_metrics()}")
    finally:
        for p in workers:
            if p.is_alive():
                p.kill()
        tasks.unlink()
        tasks.close()
