"""Where the time of one NatsQueue put and get goes, against plain nats-py (one process).

    python benchmarks/nats_hotpath.py              # phases, hops, messages per op, profile
    python benchmarks/nats_hotpath.py --rounds 500 --no-profile

The companion of the ``nats`` section of ``bench.py`` (``sqbench/workloads/nats.py``), on a
nats-server of its own on loopback (``sqbench/natsserver.py``). Every case runs in this one
process; the cases are interleaved round by round, and each figure is the median over the
rounds, in microseconds. The small dict is the benchmark's.

- ``nats-py``: ``await js.publish`` (acked) | ``fetch(1)`` | ``ack_sync``, on a stream set up
  like a queue's (``impls/natspy.py``); ``nats-py[ack]`` with ``ack()`` (not confirmed);
  ``nats-py+msgid`` the floor with a ``Nats-Msg-Id`` header on each publish (what a NatsQueue
  put sends: the server then checks it against the stream's duplicate window);
- ``NatsQueue``: ``put`` | ``get`` (sync API: each call hops to the NATS loop thread and back);
  ``NatsQueue-noroom`` the same with the room-signal publishes dropped (the handle's own
  connection's ``publish`` is wrapped, in this process only, to price them);
  ``NatsQueue-async``: ``await put_async`` | ``await get_async`` from this thread's loop;
- ``hop``: ``_natsio.run`` of an empty coroutine (the sync API's thread hop, there and back);
- messages per call: the connection's ``out_msgs``/``in_msgs`` over a put, a get, a
  ``put_batch(100)`` and a ``get_batch(100)``;
- profile: cProfile of the NATS loop thread and of the calling thread over the sync round
  trips, top functions by own time.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import pickle
import pstats
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

_HERE = Path(__file__).resolve().parent
for _path in (_HERE, _HERE.parent):  # sqbench, and shared_queue from this checkout
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from sqbench import natsserver  # noqa: E402 - needs the path set above
from sqbench.impls import natspy  # noqa: E402

ITEM = {"id": 1, "name": "item", "vals": [1, 2, 3], "x": 1.5}
WARMUP = 20


def _median_us(xs: list[float]) -> float:
    return statistics.median(xs[WARMUP:]) * 1e6


class Direct:
    """Plain nats-py in this thread's own loop: publish (acked), fetch(1), ack_sync."""

    def __init__(self, url: str, msgid: bool = False, confirm: bool = True):
        self.impl = natspy.NatsPyImpl()
        self.h = self.impl.create(1000, 4096)
        self.url, self.msgid, self.confirm = url, msgid, confirm
        self.phases: dict[str, list[float]] = {"put": [], "get": [], "ack": [], "rt": []}

    async def start(self) -> None:
        _, stream, self.subject = self.h.endpoint
        self.nc = await natspy._connect(self.url)
        self.js = self.nc.jetstream()
        self.psub = await self.js.pull_subscribe_bind(natspy.DURABLE, stream)

    async def round(self) -> None:
        headers = {"Nats-Msg-Id": uuid.uuid4().hex} if self.msgid else None
        t0 = time.perf_counter()
        await self.js.publish(self.subject, pickle.dumps(ITEM, 5), headers=headers)
        t1 = time.perf_counter()
        (msg,) = await self.psub.fetch(1, timeout=10)
        t2 = time.perf_counter()
        await (msg.ack_sync(timeout=10) if self.confirm else msg.ack())
        pickle.loads(msg.data)
        t3 = time.perf_counter()
        for k, v in (("put", t1 - t0), ("get", t3 - t1), ("ack", t3 - t2), ("rt", t3 - t0)):
            self.phases[k].append(v)

    async def stop(self) -> None:
        await self.js.delete_stream(self.h.endpoint[1])
        await self.nc.close()


def _queue(url: str, tag: str) -> Any:
    import shared_queue

    # A connection of its own (handles share one only with the same options): the noroom
    # wrapper stays on its handle. The ping interval is the one option that differs.
    ping = 120 + sum(tag.encode())
    return shared_queue.connect(url, f"hot_{tag}_{time.time_ns()}", create=True,
                                capacity=1000, item_size=4096, ping_interval=ping)  # fmt: skip


def _nc(q: Any) -> Any:
    """The connection of q's sync API (private: follows shared_queue/_nats.py)."""
    io = getattr(q, "_io", None)
    return io.nc if io is not None else q._nc


def _drop_room_publish(q: Any) -> Callable[[], None]:
    """Wrap q's connection's publish so that room signals are not sent; returns the undo."""
    nc = _nc(q)
    original = nc.publish
    room = q._room_subject

    async def publish(subject: str, *args: Any, **kwargs: Any) -> None:
        if subject == room:
            return
        await original(subject, *args, **kwargs)

    nc.publish = publish
    return lambda: setattr(nc, "publish", original)


def _sync_round(q: Any, phases: dict[str, list[float]]) -> None:
    t0 = time.perf_counter()
    q.put(ITEM, timeout=10)
    t1 = time.perf_counter()
    q.get(timeout=10)
    t2 = time.perf_counter()
    for k, v in (("put", t1 - t0), ("get", t2 - t1), ("rt", t2 - t0)):
        phases[k].append(v)


async def _async_round(q: Any, phases: dict[str, list[float]]) -> None:
    t0 = time.perf_counter()
    await q.put_async(ITEM, timeout=10)
    t1 = time.perf_counter()
    await q.get_async(timeout=10)
    t2 = time.perf_counter()
    for k, v in (("put", t1 - t0), ("get", t2 - t1), ("rt", t2 - t0)):
        phases[k].append(v)


def messages_per_call(q: Any) -> dict[str, tuple[float, float]]:
    """(out_msgs, in_msgs) of q's connection per put, get, put_batch(100), get_batch(100)."""
    from shared_queue import _natsio

    nc = _nc(q)
    stats = nc.stats

    def count(fn: Callable[[], Any], n: int) -> tuple[float, float]:
        _natsio.run(nc.flush())
        time.sleep(0.1)  # late ack confirmations of the calls before
        o, i = stats["out_msgs"], stats["in_msgs"]
        for _ in range(n):
            fn()
        time.sleep(0.1)  # this call's late ones
        return (stats["out_msgs"] - o) / n, (stats["in_msgs"] - i) / n

    items = [ITEM] * 100
    return {
        "put": count(lambda: q.put(ITEM), 50),
        "get": count(lambda: q.get(), 50),
        "put_batch(100)": count(lambda: q.put_batch(items), 5),
        "get_batch(100)": count(lambda: q.get_batch(100), 5),
    }


def _profile_text(prof: cProfile.Profile, top: int) -> str:
    out = io.StringIO()
    stats = pstats.Stats(prof, stream=out)
    stats.sort_stats("tottime").print_stats(top)
    lines = out.getvalue().splitlines()
    start = next((i for i, line in enumerate(lines) if "ncalls" in line), 0)
    return "\n".join(lines[start : start + top + 1])


def profile(url: str, rounds: int, top: int) -> str:
    """cProfile of the NATS loop thread and of the caller over ``rounds`` sync round trips."""
    from shared_queue import _natsio

    q = _queue(url, "prof")
    try:
        for _ in range(WARMUP):
            q.put(ITEM)
            q.get()
        loop_prof, caller_prof = cProfile.Profile(), cProfile.Profile()
        loop = _natsio.loop()
        _natsio.run(_call(loop_prof.enable))
        caller_prof.enable()
        for _ in range(rounds):
            q.put(ITEM, timeout=10)
            q.get(timeout=10)
        caller_prof.disable()
        _natsio.run(_call(loop_prof.disable))
        del loop
        return (
            f"NATS loop thread, {rounds} put + get (sync), by own time:\n"
            + _profile_text(loop_prof, top)
            + f"\n\ncalling thread, the same {rounds} round trips:\n"
            + _profile_text(caller_prof, top // 2)
        )
    finally:
        q.unlink()
        q.close()


async def _call(fn: Callable[[], Any]) -> None:
    fn()


async def _noop() -> None:
    return None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--rounds", type=int, default=300, help="round trips per case (default 300)")
    ap.add_argument("--no-profile", action="store_true", help="skip the cProfile part")
    ap.add_argument("--top", type=int, default=25, help="profile lines (default 25)")
    args = ap.parse_args(argv)
    try:
        url = natsserver.url()
    except natsserver.NatsServerUnavailable as e:
        print(f"skipped: {e}")
        return 0
    from shared_queue import _natsio

    n = WARMUP + args.rounds
    cases: dict[str, dict[str, list[float]]] = {}
    hop: list[float] = []
    # The direct cases and the async case share one loop in this (main) thread.
    loop = asyncio.new_event_loop()
    directs = {
        "nats-py": Direct(url),
        "nats-py[ack]": Direct(url, confirm=False),
        "nats-py+msgid": Direct(url, msgid=True),
    }
    q_sync, q_noroom, q_async = _queue(url, "sync"), _queue(url, "noroom"), _queue(url, "async")
    undo = _drop_room_publish(q_noroom)
    try:
        for name, d in directs.items():
            loop.run_until_complete(d.start())
            cases[name] = d.phases
        for k in ("NatsQueue", "NatsQueue-noroom", "NatsQueue-async"):
            cases[k] = {"put": [], "get": [], "rt": []}
        order: list[Callable[[], None]] = [
            *(lambda d=d: loop.run_until_complete(d.round()) for d in directs.values()),
            lambda: _sync_round(q_sync, cases["NatsQueue"]),
            lambda: _sync_round(q_noroom, cases["NatsQueue-noroom"]),
            lambda: loop.run_until_complete(_async_round(q_async, cases["NatsQueue-async"])),
        ]
        for i in range(n):  # interleaved, every other round in reverse order
            for run in order if i % 2 == 0 else order[::-1]:
                run()
            t = time.perf_counter()
            _natsio.run(_noop())
            hop.append(time.perf_counter() - t)
        counts = messages_per_call(q_sync)
    finally:
        undo()
        for q in (q_sync, q_noroom, q_async):
            q.unlink()
            q.close()
        for d in directs.values():
            if hasattr(d, "nc"):
                loop.run_until_complete(d.stop())
        loop.run_until_complete(asyncio.sleep(0.2))  # q_async's close runs on this loop
        loop.close()

    print(f"# NatsQueue hot path vs nats-py, one process ({args.rounds} rounds, median us)\n")
    print("| case | put | get (fetch + ack) | of which ack | round trip |")
    print("|---|---|---|---|---|")
    for name, ph in cases.items():
        ack = f"{_median_us(ph['ack']):.0f}" if "ack" in ph else ""
        print(f"| {name} | {_median_us(ph['put']):.0f} | {_median_us(ph['get']):.0f} | {ack} "
              f"| {_median_us(ph['rt']):.0f} |")  # fmt: skip
    print(f"\nthread hop, `_natsio.run(noop)` (sync API): {_median_us(hop):.0f} us")
    print("\nmessages per call on the queue's connection (out, in):")
    for name, (o, i) in counts.items():
        print(f"- {name}: {o:g} out, {i:g} in")
    if not args.no_profile:
        print()
        print(profile(url, args.rounds, args.top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
