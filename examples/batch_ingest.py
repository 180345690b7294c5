"""Ingest sensor readings in batches: put_batch and get_batch move many items per round.

Each sensor process sends its readings in batches; the collector takes up to a batch at a
time, keeps per-sensor statistics and prints the throughput in items/s.

    python examples/batch_ingest.py [--sensors 4] [--readings 20000] [--batch 200]
"""

from __future__ import annotations

import argparse
import math
import os
import time
from multiprocessing import get_context

from shared_queue import SharedMemoryQueue


def sensor(readings: SharedMemoryQueue, sensor_id: int, n: int, batch: int) -> None:
    for start in range(0, n, batch):
        # A reading: (sensor, sequence number, value).
        readings.put_batch(
            [(sensor_id, i, math.sin(i / 100)) for i in range(start, min(start + batch, n))]
        )
    readings.put(("done", sensor_id))
    readings.close()


def main() -> None:
    parser = argparse.ArgumentParser(description="Batch ingest of sensor readings.")
    parser.add_argument("--sensors", type=int, default=4)
    parser.add_argument("--readings", type=int, default=20_000, help="per sensor")
    parser.add_argument("--batch", type=int, default=200)
    args = parser.parse_args()
    run_id = f"batch_ingest_{os.getpid()}"

    readings = SharedMemoryQueue(
        "readings", create=True, capacity=4 * args.batch, item_size=64, run_id=run_id
    )
    procs = [
        get_context("spawn").Process(target=sensor, args=(readings, s, args.readings, args.batch))
        for s in range(args.sensors)
    ]
    try:
        for p in procs:
            p.start()
        counts = [0] * args.sensors
        next_seq = [0] * args.sensors
        running = args.sensors
        start = time.perf_counter()
        while running:
            for item in readings.get_batch(args.batch, timeout=30):
                if item[0] == "done":
                    running -= 1
                    continue
                sensor_id, seq, _value = item
                assert seq == next_seq[sensor_id], "each sensor's readings arrive in order"
                next_seq[sensor_id] += 1
                counts[sensor_id] += 1
        elapsed = time.perf_counter() - start
        for p in procs:
            p.join(30)
        total = sum(counts)
        print(f"readings per sensor: {counts}")
        print(
            f"ingested {total} readings from {args.sensors} sensors in {elapsed:.2f} s: "
            f"{total / elapsed:.0f} items/s"
        )
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
        readings.unlink()
        readings.close()


if __name__ == "__main__":
    main()
