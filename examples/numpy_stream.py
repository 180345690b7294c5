"""Stream camera-like frames: one producer -> N worker processes -> a collector.

Frames travel through a typed raw queue (no pickling); each worker gets a frame of its own,
computes a statistic and sends a small result dict back. Prints frames/s and GB/s.

    python examples/numpy_stream.py [--frames 300] [--workers 2]
"""

from __future__ import annotations

import argparse
import os
import time
from multiprocessing import get_context

import numpy as np

from shared_queue import SharedMemoryQueue

SHAPE = (480, 640, 3)
STOP = 0xFFFF  # a frame whose sequence number is this tells a worker to stop


def seq_of(frame: np.ndarray) -> int:
    return int(frame[0, 0, 0]) + 256 * int(frame[0, 0, 1])


def worker(frames: SharedMemoryQueue, results: SharedMemoryQueue) -> None:
    while True:
        frame = frames.get()  # a (480, 640, 3) uint8 array of its own
        seq = seq_of(frame)
        if seq == STOP:
            break
        results.put({"seq": seq, "mean": float(frame.mean())})
    frames.close()
    results.close()


def main() -> None:
    parser = argparse.ArgumentParser(description="Stream frames through worker processes.")
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    run_id = f"numpy_stream_{os.getpid()}"

    frames = SharedMemoryQueue(
        "frames", create=True, capacity=8, run_id=run_id, dtype=np.uint8, shape=SHAPE
    )
    results = SharedMemoryQueue("results", create=True, capacity=64, item_size=256, run_id=run_id)
    procs = [
        get_context("spawn").Process(target=worker, args=(frames, results))
        for _ in range(args.workers)
    ]
    try:
        for p in procs:
            p.start()
        frame = np.random.default_rng(0).integers(0, 255, SHAPE, dtype=np.uint8)
        seen: set[int] = set()
        start = time.perf_counter()
        for seq in range(args.frames):
            frame[0, 0, :2] = (seq % 256, seq // 256)
            frames.put(frame)
            while not results.empty():
                seen.add(results.get()["seq"])
        while len(seen) < args.frames:
            seen.add(results.get(timeout=30)["seq"])
        elapsed = time.perf_counter() - start
        frame[0, 0, :2] = (STOP % 256, STOP // 256)
        for _ in procs:
            frames.put(frame)
        for p in procs:
            p.join(30)
        assert seen == set(range(args.frames)), "every frame is processed exactly once"
        gb = args.frames * frame.nbytes / 1e9
        print(
            f"{args.frames} frames of {frame.nbytes / 1e6:.2f} MB through {args.workers} "
            f"workers in {elapsed:.2f} s: {args.frames / elapsed:.0f} frames/s, "
            f"{gb / elapsed:.2f} GB/s"
        )
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
        for q in (frames, results):
            q.unlink()
            q.close()


if __name__ == "__main__":
    main()
