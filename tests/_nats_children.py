"""Child-process bodies for the NATS fail-over test (importable, so spawn can run them).

Each child appends one line per completed operation to its own file, flushed at once: the
parent reads progress from the files, and after the run, what was acknowledged.
"""

from __future__ import annotations

import logging
from pathlib import Path

import shared_queue


def producer(url: str, name: str, tag: str, count: int, out: str) -> None:
    """Put ``(tag, i)`` for i < count; after each put returns, write ``i``."""
    logging.basicConfig(level=logging.INFO, filename=out + ".log")  # the client's errors go here
    with shared_queue.connect(url, name, io_timeout=60) as q, Path(out).open("a") as f:
        for i in range(count):
            q.put((tag, i))
            f.write(f"{i}\n")
            f.flush()


def consumer(url: str, name: str, stop_file: str, out: str) -> None:
    """Get items until ``stop_file`` exists and the queue is empty; write each one after it."""
    logging.basicConfig(level=logging.INFO, filename=out + ".log")
    stop = Path(stop_file)
    with shared_queue.connect(url, name, io_timeout=60) as q, Path(out).open("a") as f:
        while True:
            try:
                tag, i = q.get(timeout=0.5)
            except shared_queue.Empty:
                if stop.exists():
                    return
                continue
            f.write(f"{tag} {i}\n")
            f.flush()
