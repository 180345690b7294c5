"""Section ``nats``: the NATS JetStream backend against plain nats-py, beside shared memory.

Every row has three kinds of column, measured in one run on one ``nats-server`` that the
benchmark starts on loopback (``natsserver.py``; file storage, ``max_payload: 8MB``):

- ``nats-py`` -- the floor: plain nats-py JetStream on a stream set up like a ``NatsQueue``'s,
  every publish acknowledged by the stream and every fetched item's ack confirmed
  (``impls/natspy.py`` says exactly how, and why that is the fair floor); ``nats-py[ack]`` the
  same with acks sent but not confirmed (what a ``NatsQueue`` get now waits for);
  ``nats-py[seq]`` (batch row only) the nats-py README's loop, ``await js.publish`` per
  message and unconfirmed ``msg.ack()``, for context;
- ``NatsQueue`` -- ``shared_queue.connect("nats://...")``, sync API unless the row says async;
  a raw queue (``raw=True``) in the arrays row;
- ``shared_queue`` -- the shared-memory queue in the same workload (``[raw]`` in the arrays
  row): what leaving the host costs.

Rows:

1. ``nats_batch_1x1`` -- small dicts (``small.make_item``), one producer process -> one
   consumer process, batches of 100 (``put_batch``/``get_batch(100)``); items/s from the
   producer's start to the consumer's last item. ``Config.nats_items`` items.
2. ``nats_roundtrip`` -- one small dict put and got back in ONE process (no other process
   involved): ``put`` + ``get``; nats-py: ``await js.publish`` + ``fetch(1)`` +
   ``ack_sync`` (``[ack]``: ``ack``). Median microseconds over ``Config.nats_rounds`` round
   trips.
3. ``nats_roundtrip_async`` -- the same with ``await put_async`` + ``await get_async`` (the
   nats-py columns run the same native asyncio code as in row 2).
4. ``nats_array_1mib`` -- float32 arrays of 1 MiB, one producer process -> one consumer
   process, single put/get (``arrays.array_throughput``; the queue holds 16 arrays); GB/s
   (1e9 bytes/s). ``Config.nats_array_bytes`` of array data per run.

The section is skipped, with a note, when nats-py or the ``nats-server`` binary is missing.
Targets (issue: "in benchmarks/, same run, loopback"; ``targets.NATS_TARGETS``): batches
>= 0.7x nats-py, round trip <= 1.3x nats-py, raw 1 MiB arrays >= 0.7x nats-py; the report
also gives the same bounds against ``nats-py[ack]``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import statistics
import time
from typing import Any

from ..common import MIB, OP_TIMEOUT, BenchError
from ..impls import natspy
from ..impls.base import Impl
from ..impls.nats import NatsQueueImpl
from ..impls.natspy import NatsPyImpl
from ..procs import queues
from .arrays import ARRAY_CAPACITY, ARRAY_HEADROOM, _float32, array_throughput
from .base import Config, Workload
from .small import make_item, throughput

NATSPY, NATSPY_ACK, NATSPY_SEQ = "nats-py", "nats-py[ack]", "nats-py[seq]"
NATSQ = NatsQueueImpl.label
SHM, SHM_RAW = "shared_queue", "shared_queue[raw]"


def _wants(*labels: str):
    def wants(impl: Impl) -> bool:
        return impl.label in labels

    return wants


def batch(impl: Impl, cfg: Config) -> float:
    items = [make_item(i) for i in range(cfg.nats_items)]
    if isinstance(impl, NatsPyImpl):
        return natspy.batch_throughput(impl, items, cfg.capacity, cfg.item_size, cfg.batch)
    return throughput(impl, dataclasses.replace(cfg, items=cfg.nats_items), 1, 1, cfg.batch)


def _queue_roundtrip(impl: Impl, cfg: Config, use_async: bool) -> list[float]:
    item = make_item(0)
    n = cfg.warmup + cfg.nats_rounds
    with queues(impl, 1, cfg.capacity, cfg.item_size) as (h,):
        q = h.obj
        if use_async:

            async def main() -> list[float]:
                samples = []
                for _ in range(n):
                    t = time.perf_counter()
                    await q.put_async(item, timeout=OP_TIMEOUT)
                    got = await q.get_async(timeout=OP_TIMEOUT)
                    samples.append(time.perf_counter() - t)
                    if got != item:
                        raise BenchError("round trip gave another item")
                return samples

            return asyncio.run(main())
        ops = impl.ops(q)
        put, get = ops.put, ops.get
        samples = []
        for _ in range(n):
            t = time.perf_counter()
            put(item)
            got = get()
            samples.append(time.perf_counter() - t)
            if got != item:
                raise BenchError("round trip gave another item")
        return samples


def roundtrip(impl: Impl, cfg: Config, use_async: bool = False) -> float:
    """Median us of one small dict's put + get in one process."""
    if isinstance(impl, NatsPyImpl):
        return natspy.roundtrip(
            impl, make_item(0), cfg.nats_rounds, cfg.warmup, cfg.capacity, cfg.item_size
        )
    samples = _queue_roundtrip(impl, cfg, use_async)
    return statistics.median(samples[cfg.warmup :]) * 1e6


def array_1mib(impl: Impl, cfg: Config) -> float:
    sized = dataclasses.replace(cfg, array_bytes=cfg.nats_array_bytes)
    if isinstance(impl, NatsPyImpl):
        n = sized.array_items(MIB)
        return natspy.array_throughput(
            impl, _float32(MIB), n, ARRAY_CAPACITY[MIB], MIB + ARRAY_HEADROOM
        )
    return array_throughput(impl, sized, MIB)


ROWS = [
    Workload(
        "nats_batch_1x1",
        "1p->1c small dicts, batches of 100",
        "items/s",
        True,
        batch,
        _wants(NATSPY, NATSPY_ACK, NATSPY_SEQ, NATSQ, SHM),
        needs=NatsQueueImpl.key,
    ),
    Workload(
        "nats_roundtrip",
        "put + get round trip, one process",
        "us",
        False,
        roundtrip,
        _wants(NATSPY, NATSPY_ACK, NATSQ, SHM),
        needs=NatsQueueImpl.key,
    ),
    Workload(
        "nats_roundtrip_async",
        "put_async + get_async round trip, one process",
        "us",
        False,
        lambda impl, cfg: roundtrip(impl, cfg, use_async=True),
        _wants(NATSPY, NATSPY_ACK, NATSQ, SHM),
        needs=NatsQueueImpl.key,
    ),
    Workload(
        "nats_array_1mib",
        "float32 arrays 1 MiB, 1p->1c (raw)",
        "GB/s",
        True,
        array_1mib,
        _wants(NATSPY, NATSPY_ACK, NATSQ, SHM_RAW),
        needs=NatsQueueImpl.key,
    ),
]
SECTION = [w.key for w in ROWS]


def describe(cfg: Config) -> str:
    """The run-facts line of the report."""
    arrays = dataclasses.replace(cfg, array_bytes=cfg.nats_array_bytes).array_items(MIB)
    return (
        "nats: one nats-server on loopback for the whole run (file storage, max_payload 8MB); "
        f"{cfg.nats_items:,} small dicts per batch run, {cfg.nats_rounds:,} round trips per "
        f"round-trip run (+{cfg.warmup} warm-up, discarded), 1 MiB arrays x {arrays} per run "
        f"(stream/queue capacity {ARRAY_CAPACITY[MIB]})"
    )


# -- the section's table -------------------------------------------------------------------


def _shm_label(key: str) -> str:
    return SHM_RAW if key == "nats_array_1mib" else SHM


def render(keys: list[str], results: dict[str, dict[str, Any]], fmt_cell, ratio) -> str:
    """The markdown table of the section: one shared-memory column (raw in the arrays row)."""
    head = ["workload", "unit", NATSPY, NATSPY_ACK, NATSPY_SEQ, NATSQ, "shared_queue (shm)",
            f"{NATSQ} / {NATSPY}", f"{NATSQ} / {NATSPY_ACK}", f"{NATSQ} / shm"]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    by_key = {w.key: w for w in ROWS}
    for key in keys:
        wl = by_key[key]
        row = results.get(key, {})
        shm = row.get(_shm_label(key))
        unit = f"{wl.unit} ({'higher' if wl.higher_is_better else 'lower'} is better)"
        cells = [
            fmt_cell(row.get(NATSPY), wl.unit),
            fmt_cell(row.get(NATSPY_ACK), wl.unit),
            fmt_cell(row.get(NATSPY_SEQ), wl.unit) if NATSPY_SEQ in row else "",
            fmt_cell(row.get(NATSQ), wl.unit),
            fmt_cell(shm, wl.unit),
            ratio(row.get(NATSQ), row.get(NATSPY)),
            ratio(row.get(NATSQ), row.get(NATSPY_ACK)),
            ratio(row.get(NATSQ), shm),
        ]
        lines.append("| " + " | ".join([wl.title, unit, *cells]) + " |")
    return "\n".join(lines)


NOTES = (
    "`nats-py` is the floor: plain nats-py on a stream like the queue's, each publish acked by "
    "the stream and each ack confirmed (batches: 100 pipelined publishes + one wait for their "
    "acks, `fetch(100)` + concurrent `ack_sync`; one item: `await js.publish`, `fetch(1)`, "
    "`ack_sync`). `nats-py[ack]` is the same with acks sent but not confirmed (`msg.ack()`), "
    "the guarantee a NatsQueue get gives. `nats-py[seq]` is the README loop (`await "
    "js.publish` per message, `msg.ack()`). `NatsQueue` is the sync API except in the async "
    "row, a raw queue in the arrays row; `shared_queue (shm)` is the shared-memory queue in "
    "the same workload (`[raw]` for arrays). Round trips run in one process; the throughput "
    "rows in two (a producer and a consumer) plus the nats-server. Ratios are NatsQueue / "
    "other of the medians."
)
