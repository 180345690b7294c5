"""Plain nats-py JetStream used directly: the floor of the NATS rows (no shared_queue code).

The stream is set up like a ``NatsQueue``'s: ``retention=workqueue``, ``discard=new``,
``max_msgs=capacity``, file storage, ``max_msg_size = item_size + 512``, one durable pull
consumer with explicit acks (``ack_wait`` 30 s, ``max_ack_pending`` unlimited). What it leaves
out is what shared_queue adds on top: no ``Nats-Msg-Id`` (so no duplicate tracking), no atomic
batches, no room signal, no thread hop (the code below is native asyncio, one loop per process).

Every publish counts once the stream has answered it (``PubAck``): "publish with ack / pull-fetch
with ack", done the fastest way nats-py allows for each row. Three columns:

- ``nats-py`` (the floor the targets are taken against): every fetched item's ack confirmed
  too (``ack_sync``), as the issue's round trip has it ("fetch(1) + ack (sync ack)");
  - batches of 100: 100 publishes sent at once, each with its reply subject, then one wait
    for all 100 ``PubAck``s (pipelined, like the 99 publishes + 1 request of ``put_batch``'s
    atomic batch; this is ``js.publish_async`` without its bug, see ``_Pipeline``); the
    consumer ``fetch(100)``es and confirms the 100 acks concurrently (``gather`` of
    ``ack_sync``);
  - one item (the round trips, the 1 MiB arrays): ``await js.publish`` (one request),
    ``fetch(1)``, ``await msg.ack_sync()``;
- ``nats-py[ack]``: the same with ``await msg.ack()``, sent but not confirmed -- the guarantee
  a ``NatsQueue`` get gives once it stopped waiting for the confirmation (its acks are
  confirmed in the background and re-sent if need be);
- ``nats-py[seq]`` (batch row only, for context): the loop of the nats-py README, ``await
  js.publish`` per message, ``fetch(100)``, ``await msg.ack()`` per message.

A publish the full stream refuses (``maximum messages exceeded``, err_code 10077, the
``discard=new`` limit) is retried after ``FULL_RETRY`` s; a ``NatsQueue`` put waits for a
get's room signal instead. The consumer knows how many items to expect and fetches exactly
that many (no end marker: a pull of more than what remains would wait out its expiry).
Items are the small dicts pickled (protocol 5) and unpickled, or the float32 array's bytes
(``tobytes()`` per put, ``np.frombuffer`` per get).
"""

from __future__ import annotations

import asyncio
import json
import pickle
import statistics
import time
from typing import Any

from .. import natsserver
from ..common import CTX, OP_TIMEOUT, BenchError, dist_version, unique_name
from ..procs import Ending, children, wait_barrier
from .base import Handle, Impl, not_importable

DURABLE = "workers"
HEADER_ROOM = 512  # as NatsQueue: max_msg_size = item_size + this
FULL_RETRY = 0.002  # seconds before a publish refused by the full stream is tried again
MAX_MSGS_EXCEEDED = 10077
VARIANTS = ("", "ack", "seq")  # the floor, unconfirmed acks, the README loop


class NatsPyImpl(Impl):
    key = "nats"  # --impl nats selects NatsQueue and this floor together
    has_batch = True

    def __init__(self, variant: str = "") -> None:
        if variant not in VARIANTS:
            raise ValueError(f"unknown nats-py variant {variant!r}")
        self.variant = variant
        self.pipelined = variant != "seq"  # batches: publishes pipelined, or one at a time
        self.confirm = variant == ""  # acks confirmed (ack_sync), or only sent (ack)
        self.label = f"nats-py[{variant}]" if variant else "nats-py"
        self.roles = frozenset({f"natspy_{variant}" if variant else "natspy"})

    def unavailable(self):
        reason = not_importable("nats.js", "nats-py")
        if reason:
            return reason
        try:
            natsserver.url()
        except natsserver.NatsServerUnavailable as e:
            return str(e)
        return None

    def create(self, capacity, item_size, array=None, peers=(1, 1)):
        url, stream = natsserver.url(), unique_name("sqbench").replace("_", "-")
        asyncio.run(_create(url, stream, capacity, item_size))
        return Handle(stream, (url, stream, f"sqb.{stream}"))

    def destroy(self, handle):
        url, stream, _ = handle.endpoint
        asyncio.run(_delete(url, stream))

    def ops(self, q):
        raise BenchError(f"{self.label} runs its own workload bodies (impls/natspy.py)")

    def version(self):
        return dist_version("nats-py")


async def _connect(url: str) -> Any:
    import nats

    return await nats.connect(url, connect_timeout=5, max_reconnect_attempts=0)


async def _create(url: str, stream: str, capacity: int, item_size: int) -> None:
    from nats.js.api import (
        AckPolicy,
        ConsumerConfig,
        DeliverPolicy,
        DiscardPolicy,
        RetentionPolicy,
        StorageType,
        StreamConfig,
    )

    nc = await _connect(url)
    try:
        js = nc.jetstream()
        await js.add_stream(
            StreamConfig(
                name=stream,
                subjects=[f"sqb.{stream}"],
                retention=RetentionPolicy.WORK_QUEUE,
                discard=DiscardPolicy.NEW,
                max_msgs=capacity,
                storage=StorageType.FILE,
                num_replicas=1,
                max_msg_size=item_size + HEADER_ROOM,
            )
        )
        await js.add_consumer(
            stream,
            ConsumerConfig(
                durable_name=DURABLE,
                ack_policy=AckPolicy.EXPLICIT,
                ack_wait=30,
                max_ack_pending=-1,
                max_waiting=4096,
                deliver_policy=DeliverPolicy.ALL,
            ),
        )
    finally:
        await nc.close()


async def _delete(url: str, stream: str) -> None:
    nc = await _connect(url)
    try:
        await nc.jetstream().delete_stream(stream)
    finally:
        await nc.close()


def _full(exc: BaseException) -> bool:
    return getattr(exc, "err_code", None) == MAX_MSGS_EXCEEDED


async def _publish_one(js: Any, subject: str, data: bytes) -> None:
    """``await js.publish`` until the stream takes it (retried while it is full)."""
    while True:
        try:
            await js.publish(subject, data, timeout=OP_TIMEOUT)
            return
        except Exception as e:
            if not _full(e):
                raise
        await asyncio.sleep(FULL_RETRY)


class _Pipeline:
    """Pipelined JetStream publishes: what ``js.publish_async`` does, without its bug.

    Each message is published with a reply subject of its own under one wildcard
    subscription, and the PubAcks (or errors) resolve one future each. nats-py 2.16's
    ``publish_async`` works the same way but never resolves the future of a publish the
    stream refuses with a 503 (``maximum messages exceeded``, which ``discard=new`` gives a full
    stream): its reply handler raises instead of setting the error, and the wait hangs.
    Concurrent ``js.publish`` requests would do too, at ~1.5x the cost per message here.
    """

    def __init__(self, nc: Any) -> None:
        self.nc = nc
        self.prefix = nc.new_inbox()
        self.futures: dict[str, asyncio.Future] = {}
        self.next = 0

    async def start(self) -> None:
        await self.nc.subscribe(f"{self.prefix}.*", cb=self._reply)

    async def _reply(self, msg: Any) -> None:
        future = self.futures.pop(msg.subject, None)
        if future is None or future.done():
            return
        reply = json.loads(msg.data) if msg.data else {"error": {"description": "no reply"}}
        error = reply.get("error")
        future.set_result(error.get("err_code", -1) if error else 0)

    async def publish(self, subject: str, datas: list[bytes]) -> None:
        """Publish all ``datas``, then wait for every PubAck; refused ones again while full."""
        loop = asyncio.get_running_loop()
        while datas:
            pending = []
            for data in datas:
                self.next += 1
                reply = f"{self.prefix}.{self.next}"
                future = self.futures[reply] = loop.create_future()
                pending.append(future)
                await self.nc.publish(subject, data, reply=reply)
            codes = await asyncio.wait_for(asyncio.gather(*pending), OP_TIMEOUT)
            failed = [d for d, code in zip(datas, codes, strict=True) if code]
            bad = {c for c in codes if c and c != MAX_MSGS_EXCEEDED}
            if bad:
                raise BenchError(f"publish refused with err_code {bad}")
            datas = failed
            if datas:
                await asyncio.sleep(FULL_RETRY)


# -- small dicts, batches of 100, one producer process -> one consumer process -----------------


def _producer(impl: NatsPyImpl, endpoint, barrier, items: list, batch: int, ending: Ending):
    url, _, subject = endpoint

    async def main() -> float:
        nc = await _connect(url)
        try:
            js = nc.jetstream()
            pipeline = _Pipeline(nc)
            await pipeline.start()
            barrier.wait(OP_TIMEOUT)
            t0 = time.perf_counter()
            for i in range(0, len(items), batch):
                datas = [pickle.dumps(x, protocol=5) for x in items[i : i + batch]]
                if impl.pipelined:
                    await pipeline.publish(subject, datas)
                else:
                    for data in datas:
                        await _publish_one(js, subject, data)
            return t0
        finally:
            await nc.close()

    try:
        return asyncio.run(main())
    finally:
        ending.wait_consumers()


def _consumer(impl: NatsPyImpl, endpoint, barrier, n: int, batch: int, ending: Ending):
    url, stream, _ = endpoint

    async def main() -> tuple[int, float]:
        nc = await _connect(url)
        try:
            js = nc.jetstream()
            psub = await js.pull_subscribe_bind(DURABLE, stream)
            barrier.wait(OP_TIMEOUT)
            count = 0
            while count < n:
                msgs = await psub.fetch(min(batch, n - count), timeout=OP_TIMEOUT)
                if impl.confirm:
                    await asyncio.gather(*(m.ack_sync(timeout=OP_TIMEOUT) for m in msgs))
                else:
                    for m in msgs:
                        await m.ack()
                for m in msgs:
                    pickle.loads(m.data)
                count += len(msgs)
            t1 = time.perf_counter()
            await nc.flush(OP_TIMEOUT)  # unconfirmed acks ([ack], [seq]) reach the server
            return count, t1
        finally:
            await nc.close()

    try:
        return asyncio.run(main())
    finally:
        ending.consumer_done()


def batch_throughput(impl: NatsPyImpl, items: list, capacity: int, item_size: int, batch: int):
    """Items/s of ``items`` in batches of ``batch``, one producer -> one consumer process."""
    barrier = CTX.Barrier(3)
    ending = Ending(1, 1)
    h = impl.create(capacity, item_size)
    try:
        n = len(items)
        specs = [
            (_producer, (impl, h.endpoint, barrier, items, batch, ending)),
            (_consumer, (impl, h.endpoint, barrier, n, batch, ending)),
        ]
        with children(specs, barrier) as collect:
            wait_barrier(barrier)
            t0, (count, t1) = collect()
    finally:
        impl.destroy(h)
    if count != n:
        raise BenchError(f"consumer got {count} items, expected {n}")
    return n / (t1 - t0)


# -- one item's round trip in one process ----------------------------------------------------


def roundtrip(impl: NatsPyImpl, item: Any, rounds: int, warmup: int, capacity: int, size: int):
    """Median us of publish (acked) + fetch(1) + ack (confirmed or not) + unpickle, in one
    process."""
    h = impl.create(capacity, size)
    url, stream, subject = h.endpoint

    async def main() -> list[float]:
        nc = await _connect(url)
        try:
            js = nc.jetstream()
            psub = await js.pull_subscribe_bind(DURABLE, stream)
            samples = []
            for _ in range(warmup + rounds):
                t = time.perf_counter()
                await js.publish(subject, pickle.dumps(item, protocol=5), timeout=OP_TIMEOUT)
                (msg,) = await psub.fetch(1, timeout=OP_TIMEOUT)
                await (msg.ack_sync(timeout=OP_TIMEOUT) if impl.confirm else msg.ack())
                pickle.loads(msg.data)
                samples.append(time.perf_counter() - t)
            return samples[warmup:]
        finally:
            await nc.close()

    try:
        return statistics.median(asyncio.run(main())) * 1e6
    finally:
        impl.destroy(h)


# -- float32 arrays, one producer process -> one consumer process ---------------------------


def _array_producer(endpoint, barrier, arr, n: int, ending: Ending) -> float:
    url, _, subject = endpoint

    async def main() -> float:
        nc = await _connect(url)
        try:
            js = nc.jetstream()
            barrier.wait(OP_TIMEOUT)
            t0 = time.perf_counter()
            for _ in range(n):
                await _publish_one(js, subject, arr.tobytes())
            return t0
        finally:
            await nc.close()

    try:
        return asyncio.run(main())
    finally:
        ending.wait_consumers()


def _array_consumer(impl: NatsPyImpl, endpoint, barrier, n: int, nbytes: int, ending: Ending):
    import numpy as np

    url, stream, _ = endpoint

    async def main() -> tuple[int, float]:
        nc = await _connect(url)
        try:
            js = nc.jetstream()
            psub = await js.pull_subscribe_bind(DURABLE, stream)
            barrier.wait(OP_TIMEOUT)
            for i in range(n):
                (msg,) = await psub.fetch(1, timeout=OP_TIMEOUT)
                await (msg.ack_sync(timeout=OP_TIMEOUT) if impl.confirm else msg.ack())
                arr = np.frombuffer(msg.data, np.float32)
                if i == 0 and arr.nbytes != nbytes:
                    raise BenchError(f"got {arr.nbytes} bytes, expected {nbytes}")
            t1 = time.perf_counter()
            await nc.flush(OP_TIMEOUT)  # the unconfirmed acks of [ack] reach the server
            return n, t1
        finally:
            await nc.close()

    try:
        return asyncio.run(main())
    finally:
        ending.consumer_done()


def array_throughput(impl: NatsPyImpl, arr: Any, n: int, capacity: int, item_size: int) -> float:
    """GB/s of ``n`` puts of ``arr``, one producer -> one consumer process."""
    barrier = CTX.Barrier(3)
    ending = Ending(1, 1)
    h = impl.create(capacity, item_size)
    try:
        specs = [
            (_array_producer, (h.endpoint, barrier, arr, n, ending)),
            (_array_consumer, (impl, h.endpoint, barrier, n, arr.nbytes, ending)),
        ]
        with children(specs, barrier) as collect:
            wait_barrier(barrier)
            t0, (count, t1) = collect()
    finally:
        impl.destroy(h)
    if count != n:
        raise BenchError(f"consumer got {count} arrays, expected {n}")
    return n * arr.nbytes / (t1 - t0) / 1e9
