"""A pool of worker processes: tasks go out on one queue, results come back on another.

Each worker takes tasks until it gets the stop sentinel; any worker may take any task, so the
collector matches results to tasks by id. The handles are passed to the workers directly
(they pickle to their names and reattach).

    python examples/worker_pool.py [--tasks 100] [--workers 4]
"""

from __future__ import annotations

import argparse
import os
import time
from collections import Counter
from multiprocessing import get_context

from shared_queue import SharedMemoryQueue

STOP = None  # the task that tells a worker to stop


def is_prime(n: int) -> bool:
    return n > 1 and all(n % d for d in range(2, int(n**0.5) + 1))


def worker(tasks: SharedMemoryQueue, results: SharedMemoryQueue, worker_id: int) -> None:
    while (task := tasks.get()) is not STOP:
        task_id, n = task
        time.sleep(0.005)  # stands for real work
        results.put({"task": task_id, "worker": worker_id, "prime": is_prime(n)})
    tasks.close()
    results.close()


def main() -> None:
    parser = argparse.ArgumentParser(description="Distribute tasks to a pool of workers.")
    parser.add_argument("--tasks", type=int, default=100)
    parser.add_argument("--workers", type=int, default=4)
    args = parser.parse_args()
    run_id = f"worker_pool_{os.getpid()}"

    tasks = SharedMemoryQueue("tasks", create=True, capacity=32, item_size=128, run_id=run_id)
    results = SharedMemoryQueue("results", create=True, capacity=32, item_size=128, run_id=run_id)
    procs = [
        get_context("spawn").Process(target=worker, args=(tasks, results, w))
        for w in range(args.workers)
    ]
    try:
        for p in procs:
            p.start()
        numbers = [1_000_003 + 2 * i for i in range(args.tasks)]
        done: dict[int, bool] = {}
        by_worker: Counter[int] = Counter()
        sent = 0
        while len(done) < args.tasks:
            # Keep the task queue fed without blocking while results wait to be collected.
            while sent < args.tasks and not tasks.full():
                tasks.put((sent, numbers[sent]))
                sent += 1
            result = results.get(timeout=30)
            done[result["task"]] = result["prime"]
            by_worker[result["worker"]] += 1
        for _ in procs:
            tasks.put(STOP)
        for p in procs:
            p.join(30)
        assert done == {i: is_prime(n) for i, n in enumerate(numbers)}, "one result per task"
        print(f"tasks per worker: {dict(sorted(by_worker.items()))}")
        print(
            f"processed {len(done)} tasks with {args.workers} workers: {sum(done.values())} primes"
        )
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
        for q in (tasks, results):
            q.unlink()
            q.close()


if __name__ == "__main__":
    main()
