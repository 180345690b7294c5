"""Throughput when processes outnumber cores: n producers -> n consumers of small dicts.

    python benchmarks/oversubscribed.py                 # n = 2, 4, 8 on this machine
    python benchmarks/oversubscribed.py --pairs 4 --repeats 5

shared_queue only (the side-by-side rows are ``bench.py``'s); it checks the bounded spin before
a semaphore sleep (docs/design.md) where it could cost most: with 2n processes on 2 cores, a
poller holds a core that a peer could use. To compare builds, build without the spin and run
again::

    CFLAGS=-DSPIN_NS=0 pip install -e .   # then `pip install -e .` to restore

Items per second from the start barrier to the last consumer's end, median of the repeats.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this checkout's shared_queue

import shared_queue

ITEM = {"id": 1, "name": "item", "vals": [1, 2, 3], "x": 1.5}
TIMEOUT = 60.0


def _producer(name: str, barrier: Any, n: int) -> None:
    q = shared_queue.SharedMemoryQueue(name)
    barrier.wait(TIMEOUT)
    for _ in range(n):
        q.put(ITEM, timeout=TIMEOUT)
    q.close()


def _consumer(name: str, barrier: Any, out: Any) -> None:
    q = shared_queue.SharedMemoryQueue(name)
    barrier.wait(TIMEOUT)
    got = 0
    while q.get(timeout=TIMEOUT) is not None:
        got += 1
    out.put((got, time.perf_counter()))
    q.close()


def run(pairs: int, per_producer: int) -> float:
    """Items/s of one run of `pairs` producers and `pairs` consumers."""
    ctx = mp.get_context("fork")
    name = f"oversub-{os.getpid()}"
    q = shared_queue.SharedMemoryQueue(name, create=True, capacity=1000, item_size=256)
    procs: list[Any] = []
    try:
        barrier = ctx.Barrier(2 * pairs + 1)
        out = ctx.Queue()
        procs += [ctx.Process(target=_producer, args=(name, barrier, per_producer))
                 for _ in range(pairs)]  # fmt: skip
        procs += [ctx.Process(target=_consumer, args=(name, barrier, out)) for _ in range(pairs)]
        for p in procs:
            p.start()
        barrier.wait(TIMEOUT)
        t0 = time.perf_counter()
        for p in procs[:pairs]:
            p.join(TIMEOUT)
        for _ in range(pairs):
            q.put(None, timeout=TIMEOUT)  # one end marker per consumer
        ends = [out.get(timeout=TIMEOUT) for _ in range(pairs)]
        for p in procs[pairs:]:
            p.join(TIMEOUT)
        if sum(got for got, _ in ends) != pairs * per_producer:
            raise RuntimeError("the consumers did not get every item")
        return pairs * per_producer / (max(t for _, t in ends) - t0)
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
        q.close()
        q.unlink()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", default="2,4,8", help="comma-separated producer counts")
    parser.add_argument("--items", type=int, default=40_000, help="items per producer")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"cores: {os.cpu_count()}\n\n| producers -> consumers | items/s (median) |\n|---|---|")
    for pairs in (int(p) for p in args.pairs.split(",")):
        rate = statistics.median(run(pairs, args.items) for _ in range(args.repeats))
        print(f"| {pairs}p->{pairs}c | {rate:,.0f} |")


if __name__ == "__main__":
    main()
