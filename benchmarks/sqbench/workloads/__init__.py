"""The workloads, one module per section of the report; this module assembles the table.

- ``base.py``: ``Config`` (how much each run moves), ``Workload`` (one row), column choice.
- ``small.py``: small dicts -- throughput 1p->1c, batches, 2p->2c, ping-pong, wake-up.
- ``arrays.py``: float32 arrays of 64 KiB, 1 MiB, 16 MiB, and the np.copyto reference.
- ``aio.py``: the asyncio API against the same rows with a sync consumer.
- ``safety.py``: crash-safe locks against the unsafe-mutex baseline.
- ``nats.py``: the NATS JetStream backend against plain nats-py, beside shared memory.

A workload in two sections runs once.
"""

from __future__ import annotations

from . import aio, arrays, nats, safety, small
from .base import Config, Workload

WORKLOADS: list[Workload] = [*small.ROWS, *arrays.ROWS, *aio.ROWS, *safety.ROWS, *nats.ROWS]
WL_BY_KEY = {w.key: w for w in WORKLOADS}
SECTIONS = {
    "small": small.SECTION,
    "arrays": arrays.SECTION,
    "async": aio.SECTION,
    "safety": safety.SECTION,
    "nats": nats.SECTION,
}

__all__ = ["SECTIONS", "WL_BY_KEY", "WORKLOADS", "Config", "Workload"]
