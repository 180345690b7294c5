"""Where a missed target's time goes, split with timestamps (docs/benchmarks.md).

    python benchmarks/split.py wakeup     # put's own time, and the consumer's return after it
    python benchmarks/split.py async      # put -> waiter thread -> event loop -> get_async
    python benchmarks/split.py arrays     # the producer's put of 1 MiB: get, get_view, polling

shared_queue only, 2 processes (fork), medians. ``wakeup`` and ``async`` sleep 2 ms before
each put, as the benchmark's wake-up rows; ``arrays`` streams a typed float32 queue of 16 slots.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this checkout's shared_queue

import numpy as np

import shared_queue
from shared_queue import _async

ROUNDS, WARMUP, IDLE = 300, 20, 0.002
MIB = 1 << 20


def _recv(conn: Any) -> Any:
    if not conn.poll(60):
        raise RuntimeError("the consumer process sent nothing within 60 s")
    return conn.recv()


def _median_us(values: list[float]) -> float:
    return statistics.median(values) * 1e6


def _run(target: Any, name: str, **create: Any) -> tuple[shared_queue.SharedMemoryQueue, Any, Any]:
    q = shared_queue.SharedMemoryQueue(name, create=True, **create)
    parent, child = mp.Pipe()
    proc = mp.get_context("fork").Process(target=target, args=(name, child), daemon=True)
    proc.start()
    return q, parent, proc


def _sync_consumer(name: str, conn: Any) -> None:
    q = shared_queue.SharedMemoryQueue(name)
    returned = []
    for _ in range(ROUNDS):
        q.get(timeout=30)
        returned.append(time.perf_counter())
    conn.send(returned)
    q.close()


def wakeup() -> None:
    q, conn, proc = _run(_sync_consumer, f"split-w-{os.getpid()}", capacity=16)
    try:
        starts, ends = [], []
        for i in range(ROUNDS):
            time.sleep(IDLE)
            starts.append(time.perf_counter())
            q.put(i)
            ends.append(time.perf_counter())
        returned = _recv(conn)
        proc.join(30)
    finally:
        q.close()
        q.unlink()
    rows = list(zip(starts, ends, returned, strict=True))[WARMUP:]
    print(f"put {_median_us([e - s for s, e, _ in rows]):.1f} us; the consumer returns "
          f"{_median_us([r - e for _, e, r in rows]):.1f} us after put returned; from put's "
          f"start {_median_us([r - s for s, _, r in rows]):.1f} us")  # fmt: skip


def _async_consumer(name: str, conn: Any) -> None:
    marks: dict[str, float] = {}
    wait = _async._sync.wait

    def timed_wait(sem: Any, timeout: float) -> bool:
        got = wait(sem, timeout)
        if got:
            marks["thread"] = time.perf_counter()
        return got

    deliver = _async.SemWaiter._deliver

    def timed_deliver(self: Any, fut: Any) -> None:
        marks["deliver"] = time.perf_counter()
        deliver(self, fut)

    _async._sync.wait = timed_wait  # type: ignore[assignment]
    _async.SemWaiter._deliver = timed_deliver  # type: ignore[method-assign]
    q = shared_queue.SharedMemoryQueue(name)

    async def main() -> list[tuple[float, ...]]:
        out = []
        for _ in range(ROUNDS):
            sent = await q.get_async(timeout=30)
            returned = time.perf_counter()
            # No marks: the item was there before the call, which did not wait (warm-up only).
            out.append((sent, marks.pop("thread", sent), marks.pop("deliver", sent), returned))
        return out

    conn.send(asyncio.run(main()))
    q.close()


def async_() -> None:
    q, conn, proc = _run(_async_consumer, f"split-a-{os.getpid()}", capacity=16)
    try:
        for _ in range(ROUNDS):
            time.sleep(IDLE)
            q.put(time.perf_counter())
        rows = _recv(conn)[WARMUP:]
        proc.join(30)
    finally:
        q.close()
        q.unlink()
    print(f"put -> waiter thread awake {_median_us([t - s for s, t, _, _ in rows]):.1f} us; "
          f"-> _deliver on the loop {_median_us([d - t for _, t, d, _ in rows]):.1f}; "
          f"-> get_async returned {_median_us([r - d for _, _, d, r in rows]):.1f}; "
          f"total {_median_us([r - s for s, _, _, r in rows]):.1f}")  # fmt: skip


ARRAY_ITEMS = 600


def _array_consumer(name: str, conn: Any, how: str) -> None:
    q = shared_queue.SharedMemoryQueue(name)
    got = 0
    while got < ARRAY_ITEMS:
        if how == "get":
            q.get(timeout=30)
        elif how == "get_view":
            with q.get_view(timeout=30) as arr:
                arr[0]
        else:  # polling: never sleeps
            try:
                with q.get_view(block=False) as arr:
                    arr[0]
            except shared_queue.Empty:
                continue
        got += 1
    conn.send("done")
    q.close()


def arrays() -> None:
    for how in ("get", "get_view", "get_view(block=False), polling"):
        n = MIB // 4
        q, conn, proc = _run(
            lambda name, conn, how=how: _array_consumer(name, conn, how),
            f"split-r-{os.getpid()}", capacity=16, dtype=np.float32, shape=(n,),
        )  # fmt: skip
        try:
            arr = np.full(n, 1.5, np.float32)
            puts = []
            t0 = time.perf_counter()
            for _ in range(ARRAY_ITEMS):
                t = time.perf_counter()
                q.put(arr, timeout=30)
                puts.append(time.perf_counter() - t)
            _recv(conn)
            rate = ARRAY_ITEMS * MIB / (time.perf_counter() - t0) / 1e9
            proc.join(30)
        finally:
            q.close()
            q.unlink()
        print(f"{how} 1 MiB: {rate:.2f} GB/s; the producer's put "
              f"median {_median_us(puts):.0f} us")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["wakeup", "async", "arrays"])
    args = parser.parse_args()
    {"wakeup": wakeup, "async": async_, "arrays": arrays}[args.what]()


if __name__ == "__main__":
    main()
