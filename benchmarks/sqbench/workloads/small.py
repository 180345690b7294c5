"""Section ``small``: small dicts through one queue, and the latency of one item.

Items are ``{"id": i, "name": "item", "vals": [1, 2, 3], "x": 1.5}``, built before the
clock starts.

1. ``single_1x1`` -- one producer process, one consumer process, one
   ``put``/``get`` per item.  Items per second from the producers' start
   (after a barrier) to the last consumer's end.  Higher is better.
2. ``batch_1x1`` -- the same with batches of 100: shared_queue uses
   ``put_batch``/``get_batch(100)``, faster-fifo ``put_many``/
   ``get_many(max_messages_to_get=100)``.  ``multiprocessing.Queue`` and pyzmq
   have no batch API, so they do single ``put``/``get`` here (see the footnote).
3. ``single_2x2`` -- two producers, two consumers, total items per second.
   pyzmq: each consumer binds a PULL socket, each producer deals its items
   round-robin over one PUSH socket per consumer (``impls/pyzmq.py`` says why).
4. ``pingpong`` -- round trip over two queues between the parent and one
   child (``put`` request, child ``get`` + ``put`` reply, parent ``get``),
   payload a small int.  Median microseconds per round trip within a repeat.
   Lower is better.
5. ``wakeup`` -- a child is blocked in ``get()``; the parent sleeps ~2 ms and
   then puts ``time.perf_counter()``; the child computes ``now - sent``.
   Median microseconds.  Lower is better.

Consumers are ready to receive before the start barrier (``Impl.bind_consumer``: pyzmq
binds its PULL socket there, and producers connect after the barrier).

Reference lines give the floors of the two latency rows, measured with bare ``posix_ipc``
semaphores between two processes (no queue, no pickling): a round-trip ping-pong, and a
process blocked in ``sem_timedwait`` woken by a post after the same ~2 ms idle
(``impls/posix_sem.py``). No design that wakes the other side with a semaphore beats them.

The throughput, ping-pong and wake-up functions here are also the other sections' rows:
``aio.py`` passes an async consumer, ``safety.py`` other columns.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from functools import partial
from typing import Any

from ..common import CTX, OP_TIMEOUT, BenchError
from ..impls.base import Impl
from ..impls.posix_sem import sem_pingpong, sem_wakeup
from ..procs import Ending, children, queues, wait_barrier
from .base import Config, Workload


def make_item(i: int) -> dict:
    return {"id": i, "name": "item", "vals": [1, 2, 3], "x": 1.5}


# -- child bodies ------------------------------------------------------------------------------


def _producer(impl: Impl, endpoint, barrier, items: list, batch: int, ending: Ending) -> float:
    q = impl.attach(endpoint)
    try:
        ops = impl.ops(q)
        barrier.wait(OP_TIMEOUT)
        t0 = time.perf_counter()
        if batch > 1:
            put_many = ops.put_many
            for i in range(0, len(items), batch):
                put_many(items[i : i + batch])
        else:
            put = ops.put
            for x in items:
                put(x)
        ops.put(None)  # one sentinel per producer
        ending.wait_consumers()
        return t0
    finally:
        impl.detach(q)


def _consumer(impl: Impl, endpoint, barrier, batch: int, ending: Ending) -> tuple[int, float]:
    """Consume until one sentinel is seen; return (count, end time)."""
    q = impl.attach(endpoint)
    try:
        impl.bind_consumer(q)
        ops = impl.ops(q)
        barrier.wait(OP_TIMEOUT)
        count = 0
        if batch > 1:
            get_many = ops.get_many
            while True:
                got = get_many(batch)
                if got and got[-1] is None:  # 1 producer: sentinel comes last
                    count += len(got) - 1
                    break
                count += len(got)
        else:
            get = ops.get
            while get() is not None:
                count += 1
        return count, time.perf_counter()
    finally:
        ending.consumer_done()
        impl.detach(q)


def _echo(impl: Impl, ep_req, ep_resp, barrier, n: int) -> None:
    req, resp = impl.attach(ep_req), impl.attach(ep_resp)
    try:
        impl.bind_consumer(req)
        get, put = impl.ops(req).get, impl.ops(resp).put
        barrier.wait(OP_TIMEOUT)
        for _ in range(n):
            put(get())
    finally:
        impl.detach(req)
        impl.detach(resp)


def _wake_consumer(impl: Impl, endpoint, barrier, n: int) -> list[float]:
    """n times: block in get(), then record now - the perf_counter() the item carries."""
    q = impl.attach(endpoint)
    try:
        impl.bind_consumer(q)
        get = impl.ops(q).get
        barrier.wait(OP_TIMEOUT)
        out = []
        for _ in range(n):
            sent = get()
            out.append(time.perf_counter() - sent)
        return out
    finally:
        impl.detach(q)


# -- measurements ------------------------------------------------------------------------------


def throughput(
    impl: Impl,
    cfg: Config,
    producers: int,
    consumers: int,
    batch: int,
    consumer: Callable[..., tuple[int, float]] = _consumer,
) -> float:
    """Items/s moved from `producers` to `consumers` processes."""
    if batch > 1 and (producers, consumers) != (1, 1):
        raise ValueError("batch workload assumes 1 producer -> 1 consumer")
    per_producer = cfg.items // producers
    chunks = [
        [make_item(p * per_producer + i) for i in range(per_producer)] for p in range(producers)
    ]
    barrier = CTX.Barrier(producers + consumers + 1)
    ending = Ending(producers, consumers)
    with queues(impl, 1, cfg.capacity, cfg.item_size, peers=(producers, consumers)) as (h,):
        specs = [(_producer, (impl, h.endpoint, barrier, chunk, batch, ending)) for chunk in chunks]
        specs += [(consumer, (impl, h.endpoint, barrier, batch, ending))] * consumers
        with children(specs, barrier) as collect:
            wait_barrier(barrier)
            results = collect()
    starts = results[:producers]
    counts, ends = zip(*results[producers:], strict=True)
    total = per_producer * producers
    if sum(counts) != total:
        raise BenchError(f"consumers got {sum(counts)} items, expected {total}")
    return total / (max(ends) - min(starts))


def single(producers: int, consumers: int, **kwargs: Any) -> Callable[[Impl, Config], float]:
    """The run of a single put/get throughput row: `producers` -> `consumers` processes."""
    return partial(throughput, producers=producers, consumers=consumers, batch=1, **kwargs)


def pingpong(impl: Impl, cfg: Config) -> float:
    """Median us per round trip parent -> child -> parent over two queues."""
    n = cfg.warmup + cfg.rounds
    barrier = CTX.Barrier(2)
    with queues(impl, 2, cfg.capacity, cfg.item_size) as (h_req, h_resp):
        put, get = impl.ops(h_req.obj).put, impl.ops(h_resp.obj).get
        specs = [(_echo, (impl, h_req.endpoint, h_resp.endpoint, barrier, n))]
        with children(specs, barrier) as collect:
            impl.bind_consumer(h_resp.obj)  # after the fork: the children get no sockets
            wait_barrier(barrier)
            samples = []
            for i in range(n):
                t = time.perf_counter()
                put(i)
                if get() != i:
                    raise BenchError("ping-pong reply mismatch")
                samples.append(time.perf_counter() - t)
            collect()
    return statistics.median(samples[cfg.warmup :]) * 1e6


def wakeup(impl: Impl, cfg: Config, consumer: Callable[..., list[float]] = _wake_consumer) -> float:
    """Median us from put(perf_counter()) to a blocked consumer's return."""
    n = cfg.warmup + cfg.wake_samples
    barrier = CTX.Barrier(2)
    with queues(impl, 1, cfg.capacity, cfg.item_size) as (h,):
        put = impl.ops(h.obj).put
        spec = (consumer, (impl, h.endpoint, barrier, n))
        with children([spec], barrier) as collect:
            wait_barrier(barrier)
            for _ in range(n):
                time.sleep(cfg.wake_sleep)  # let the consumer block in get()
                put(time.perf_counter())
            (samples,) = collect()
    return statistics.median(samples[cfg.warmup :]) * 1e6


ROWS = [
    Workload("single_1x1", "1p->1c small dicts, single put/get", "items/s", True, single(1, 1)),
    Workload(
        "batch_1x1",
        "1p->1c small dicts, batches of 100",
        "items/s",
        True,
        lambda impl, cfg: throughput(impl, cfg, 1, 1, cfg.batch),
    ),
    Workload("single_2x2", "2p->2c small dicts, single put/get", "items/s", True, single(2, 2)),
    Workload(
        "pingpong",
        "ping-pong round trip (2 queues)",
        "us",
        False,
        pingpong,
        floor=sem_pingpong,
    ),
    Workload("wakeup", "wake-up latency, blocked get()", "us", False, wakeup, floor=sem_wakeup),
]
SECTION = [w.key for w in ROWS]
