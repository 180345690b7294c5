"""Side-by-side benchmark: shared_queue vs multiprocessing.Queue vs faster-fifo.

Run from the repository root::

    python benchmarks/bench.py                  # full run, 5 repeats
    python benchmarks/bench.py --quick          # fewer items, 3 repeats, < 60 s
    python benchmarks/bench.py --repeats 7 --json out.json
    python benchmarks/bench.py --impl mp,ff     # only some implementations
    python benchmarks/bench.py --variant lock=futex --variant lock=sem

All implementations are measured in ONE run, interleaved (repeat 1 of every
implementation, then repeat 2, ...) so that slow drifts of a noisy machine hit
all of them alike.  Worker processes use the ``fork`` start method.  Every
number in the table is the median over the repeats; time is taken with
``time.perf_counter`` (CLOCK_MONOTONIC on Linux, so it is comparable across
processes).

Workloads (``items`` are small dicts ``{"id": i, "name": "item",
"vals": [1, 2, 3], "x": 1.5}``, built before the clock starts):

1. ``1p->1c single`` -- one producer process, one consumer process, one
   ``put``/``get`` per item.  Items per second from the producers' start
   (after a barrier) to the last consumer's end.  Higher is better.
2. ``1p->1c batch 100`` -- the same with batches of 100: shared_queue uses
   ``put_batch``/``get_batch(100)``, faster-fifo ``put_many``/
   ``get_many(max_messages_to_get=100)``.  ``multiprocessing.Queue`` has no
   batch API, so it does single ``put``/``get`` here (see the footnote).
3. ``2p->2c single`` -- two producers, two consumers, total items per second.
4. ``ping-pong`` -- round trip over two queues between the parent and one
   child (``put`` request, child ``get`` + ``put`` reply, parent ``get``).
   Median microseconds per round trip within a repeat.  Lower is better.
5. ``wake-up latency`` -- a child is blocked in ``get()``; the parent sleeps
   ~1.5 ms and then puts ``time.perf_counter()``; the child computes
   ``now - sent``.  Median microseconds.  Lower is better.

A reference row gives a bare ``posix_ipc`` semaphore ping-pong between two
processes (no queue, no pickling): a floor for any design that wakes the other
side with a semaphore.

Ratio columns are ``shared_queue / other`` of the medians: for items/s a ratio
above 1 means shared_queue is faster; for microseconds a ratio below 1 means
shared_queue is faster.

Queue sizing: shared_queue gets ``capacity`` slots of ``item_size`` bytes;
``multiprocessing.Queue`` gets ``maxsize=capacity``; faster-fifo (bounded by
bytes) gets ``capacity * item_size`` bytes, i.e. the same shared-memory
footprint as shared_queue.

Robustness: children attach to shared_queue by name and ``close()`` at the
end, the parent ``close()``s and ``unlink()``s in ``finally``; every blocking
call has a timeout, children are joined with a timeout and killed if they
straggle, and a failing implementation shows ``error`` instead of stopping
the run.  New entries left in ``/dev/shm`` are reported at the end.

``--variant key=value[,key=value...]`` (repeatable) adds one shared_queue
column per variant: if ``shared_queue`` has a module attribute ``key`` it is
set for that run (children inherit it through fork), otherwise ``key=value``
is passed to the ``SharedMemoryQueue`` constructor.  Values are Python
literals when they parse as one, strings otherwise.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import importlib
import inspect
import itertools
import json
import multiprocessing as mp
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:  # make `import shared_queue` work from a checkout
    sys.path.insert(0, str(REPO_ROOT))

CTX = mp.get_context("fork")
OP_TIMEOUT = 30.0  # seconds: any single blocking queue call
RUN_TIMEOUT = 120.0  # seconds: one workload run, children included
SHM_DIR = Path("/dev/shm")
_names = itertools.count()


class BenchError(RuntimeError):
    """One run of one workload failed (child error, crash or timeout)."""


def unique_name(prefix: str) -> str:
    return f"{prefix}_{os.getpid()}_{next(_names)}"


def make_item(i: int) -> dict:
    return {"id": i, "name": "item", "vals": [1, 2, 3], "x": 1.5}


# --------------------------------------------------------------------------
# Implementations: one small adapter each; the workloads only use this API.
# --------------------------------------------------------------------------


@dataclass
class Ops:
    """Bound operations on one queue handle (cheap to call in hot loops)."""

    put: Callable[[Any], None]
    get: Callable[[], Any]
    put_many: Callable[[list], None]
    get_many: Callable[[int], list]


@dataclass
class Handle:
    obj: Any  # the parent's queue object
    endpoint: Any  # what a forked child needs to attach


class Impl:
    """Factory/adapter for one queue implementation."""

    key = ""
    label = ""
    has_batch = True

    def unavailable(self) -> str | None:
        """None if usable, else a reason."""
        return None

    def create(self, capacity: int, item_size: int) -> Handle:
        raise NotImplementedError

    def attach(self, endpoint: Any) -> Any:
        """In a child: open the queue from its endpoint."""
        return endpoint

    def detach(self, q: Any) -> None:
        """In a child: release the queue."""

    def destroy(self, handle: Handle) -> None:
        """In the parent: release and remove the queue."""

    def ops(self, q: Any) -> Ops:
        raise NotImplementedError

    @contextlib.contextmanager
    def active(self):
        """Context in which every run of this implementation happens."""
        yield

    def version(self) -> str:
        return ""


class MpQueueImpl(Impl):
    key = "mp"
    label = "mp.Queue"
    has_batch = False

    def create(self, capacity, item_size):
        q = CTX.Queue(maxsize=capacity)
        return Handle(q, q)

    def detach(self, q):
        q.close()
        q.join_thread()  # flush the feeder thread before the child exits

    def destroy(self, handle):
        self.detach(handle.obj)

    def ops(self, q):
        put = partial(q.put, timeout=OP_TIMEOUT)
        get = partial(q.get, timeout=OP_TIMEOUT)

        def put_many(xs):  # no batch API: one put per item
            for x in xs:
                put(x)

        def get_many(n):  # no batch API: one get
            return [get()]

        return Ops(put, get, put_many, get_many)

    def version(self):
        return platform.python_version()


class FasterFifoImpl(Impl):
    key = "ff"
    label = "faster-fifo"

    def unavailable(self):
        try:
            importlib.import_module("faster_fifo")
        except Exception as e:
            return f"faster_fifo not importable: {e!r}"
        return None

    def create(self, capacity, item_size):
        import faster_fifo

        q = faster_fifo.Queue(max_size_bytes=capacity * item_size)
        return Handle(q, q)

    def ops(self, q):
        return Ops(
            put=partial(q.put, timeout=OP_TIMEOUT),
            get=partial(q.get, timeout=OP_TIMEOUT),
            put_many=partial(q.put_many, timeout=OP_TIMEOUT),
            get_many=lambda n: q.get_many(timeout=OP_TIMEOUT, max_messages_to_get=n),
        )

    def version(self):
        return _dist_version("faster-fifo")


class SharedQueueImpl(Impl):
    key = "sq"
    has_batch = True

    def __init__(self, variant: dict[str, Any] | None = None):
        self.variant = dict(variant or {})
        suffix = ",".join(f"{k}={v}" for k, v in self.variant.items())
        self.label = f"shared_queue[{suffix}]" if suffix else "shared_queue"
        self._mod = None
        self._module_attrs: dict[str, Any] = {}
        self._ctor_kwargs: dict[str, Any] = {}

    def unavailable(self):
        try:
            self._mod = importlib.import_module("shared_queue")
            self._mod.SharedMemoryQueue  # noqa: B018 - probe the attribute
        except Exception as e:
            return f"shared_queue not importable: {e!r}"
        for k, v in self.variant.items():
            if hasattr(self._mod, k):
                self._module_attrs[k] = v
            else:
                self._ctor_kwargs[k] = v
        return None

    @contextlib.contextmanager
    def active(self):
        saved = {k: getattr(self._mod, k) for k in self._module_attrs}
        try:
            for k, v in self._module_attrs.items():
                setattr(self._mod, k, v)
            yield
        finally:
            for k, v in saved.items():
                setattr(self._mod, k, v)

    def create(self, capacity, item_size):
        name = unique_name("sqbench")
        q = self._mod.SharedMemoryQueue(
            name, create=True, capacity=capacity, item_size=item_size, **self._ctor_kwargs
        )
        return Handle(q, name)

    def attach(self, endpoint):
        return self._mod.SharedMemoryQueue(endpoint)

    def detach(self, q):
        q.close()

    def destroy(self, handle):
        try:
            handle.obj.close()
        finally:
            handle.obj.unlink()

    def ops(self, q):
        # put_batch/get_batch may or may not take a timeout; pass it if they do.
        put_batch = _with_timeout_if_supported(q.put_batch)
        get_batch = _with_timeout_if_supported(q.get_batch)
        return Ops(
            put=partial(q.put, timeout=OP_TIMEOUT),
            get=partial(q.get, timeout=OP_TIMEOUT),
            put_many=put_batch,
            get_many=get_batch,
        )

    def version(self):
        return getattr(self._mod, "__version__", "") + f" ({_git_rev()})"


def _with_timeout_if_supported(fn: Callable) -> Callable:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return fn
    return partial(fn, timeout=OP_TIMEOUT) if "timeout" in params else fn


def _dist_version(dist: str) -> str:
    try:
        from importlib.metadata import version

        return version(dist)
    except Exception:
        return ""


def _git_rev() -> str:
    try:
        out = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
        return f"git {out.stdout.strip()}" if out.returncode == 0 else "uncommitted"
    except Exception:
        return ""


# --------------------------------------------------------------------------
# Child process plumbing
# --------------------------------------------------------------------------


def _child_main(conn, barrier, fn, args):
    """Run fn(*args) in a forked child and send ("ok", result) or ("err", tb)."""
    try:
        result = fn(*args)
        conn.send(("ok", result))
    except BaseException:
        with contextlib.suppress(Exception):
            barrier.abort()
        with contextlib.suppress(Exception):
            conn.send(("err", traceback.format_exc()))
    finally:
        conn.close()


@contextlib.contextmanager
def children(specs: list[tuple[Callable, tuple]], barrier):
    """Start one forked child per (fn, args); yield a collect() function.

    collect() waits (with RUN_TIMEOUT) for every child's result and returns
    them in order.  On exit, stragglers are killed.
    """
    procs, conns = [], []
    try:
        for fn, args in specs:
            recv, send = CTX.Pipe(duplex=False)
            p = CTX.Process(target=_child_main, args=(send, barrier, fn, args), daemon=True)
            p.start()
            send.close()
            procs.append(p)
            conns.append(recv)

        def collect() -> list:
            deadline = time.monotonic() + RUN_TIMEOUT
            results = []
            for p, c in zip(procs, conns, strict=True):
                if not c.poll(max(0.0, deadline - time.monotonic())):
                    raise BenchError(f"timeout waiting for child {p.name}")
                try:
                    status, payload = c.recv()
                except EOFError:
                    p.join(1)
                    raise BenchError(f"child {p.name} died (exitcode {p.exitcode})") from None
                if status != "ok":
                    raise BenchError(f"child {p.name} failed:\n{payload}")
                results.append(payload)
            return results

        yield collect
    finally:
        with contextlib.suppress(Exception):
            barrier.abort()  # never leave anyone stuck at the barrier
        for p in procs:
            p.join(5)
            if p.is_alive():
                p.kill()
                p.join(5)
        for c in conns:
            c.close()


def wait_barrier(barrier) -> None:
    try:
        barrier.wait(OP_TIMEOUT)
    except threading.BrokenBarrierError:
        raise BenchError("a child failed before the start barrier") from None


@contextlib.contextmanager
def queues(impl: Impl, n: int, cfg: Config):
    """Create n queues of impl; destroy them on exit."""
    handles: list[Handle] = []
    with impl.active():
        try:
            for _ in range(n):
                handles.append(impl.create(cfg.capacity, cfg.item_size))
            yield handles
        finally:
            for h in reversed(handles):
                try:
                    impl.destroy(h)
                except Exception as e:
                    print(f"warning: {impl.label}: cleanup failed: {e!r}", file=sys.stderr)


# --------------------------------------------------------------------------
# Child bodies
# --------------------------------------------------------------------------


def _producer(impl: Impl, endpoint, barrier, items: list, batch: int) -> float:
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
        return t0
    finally:
        impl.detach(q)


def _consumer(impl: Impl, endpoint, barrier, batch: int) -> tuple[int, float]:
    """Consume until one sentinel is seen; return (count, end time)."""
    q = impl.attach(endpoint)
    try:
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
        impl.detach(q)


def _echo(impl: Impl, ep_req, ep_resp, barrier, n: int) -> None:
    req, resp = impl.attach(ep_req), impl.attach(ep_resp)
    try:
        get, put = impl.ops(req).get, impl.ops(resp).put
        barrier.wait(OP_TIMEOUT)
        for _ in range(n):
            put(get())
    finally:
        impl.detach(req)
        impl.detach(resp)


def _wake_consumer(impl: Impl, endpoint, barrier, n: int) -> list[float]:
    q = impl.attach(endpoint)
    try:
        get = impl.ops(q).get
        barrier.wait(OP_TIMEOUT)
        out = []
        for _ in range(n):
            sent = get()
            out.append(time.perf_counter() - sent)
        return out
    finally:
        impl.detach(q)


def _sem_echo(name_a: str, name_b: str, barrier, n: int) -> None:
    import posix_ipc

    a, b = posix_ipc.Semaphore(name_a), posix_ipc.Semaphore(name_b)
    try:
        barrier.wait(OP_TIMEOUT)
        for _ in range(n):
            a.acquire(OP_TIMEOUT)
            b.release()
    finally:
        a.close()
        b.close()


# --------------------------------------------------------------------------
# Workloads: each takes an Impl and returns one number per run
# --------------------------------------------------------------------------


@dataclass
class Config:
    items: int = 200_000
    rounds: int = 5_000  # ping-pong round trips
    wake_samples: int = 200
    wake_sleep: float = 0.0015
    warmup: int = 20  # discarded round trips / wake-ups
    capacity: int = 1000
    item_size: int = 4096
    batch: int = 100


def throughput(impl: Impl, cfg: Config, producers: int, consumers: int, batch: int) -> float:
    """Items/s moved from `producers` to `consumers` processes."""
    if batch > 1 and (producers, consumers) != (1, 1):
        raise ValueError("batch workload assumes 1 producer -> 1 consumer")
    per_producer = cfg.items // producers
    chunks = [
        [make_item(p * per_producer + i) for i in range(per_producer)] for p in range(producers)
    ]
    barrier = CTX.Barrier(producers + consumers + 1)
    with queues(impl, 1, cfg) as (h,):
        specs = [(_producer, (impl, h.endpoint, barrier, chunk, batch)) for chunk in chunks]
        specs += [(_consumer, (impl, h.endpoint, barrier, batch))] * consumers
        with children(specs, barrier) as collect:
            wait_barrier(barrier)
            results = collect()
    starts = results[:producers]
    counts, ends = zip(*results[producers:], strict=True)
    total = per_producer * producers
    if sum(counts) != total:
        raise BenchError(f"consumers got {sum(counts)} items, expected {total}")
    return total / (max(ends) - min(starts))


def pingpong(impl: Impl, cfg: Config) -> float:
    """Median us per round trip parent -> child -> parent over two queues."""
    n = cfg.warmup + cfg.rounds
    barrier = CTX.Barrier(2)
    with queues(impl, 2, cfg) as (h_req, h_resp):
        put, get = impl.ops(h_req.obj).put, impl.ops(h_resp.obj).get
        specs = [(_echo, (impl, h_req.endpoint, h_resp.endpoint, barrier, n))]
        with children(specs, barrier) as collect:
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


def wakeup(impl: Impl, cfg: Config) -> float:
    """Median us from put(perf_counter()) to a blocked consumer's return."""
    n = cfg.warmup + cfg.wake_samples
    barrier = CTX.Barrier(2)
    with queues(impl, 1, cfg) as (h,):
        put = impl.ops(h.obj).put
        with children([(_wake_consumer, (impl, h.endpoint, barrier, n))], barrier) as collect:
            wait_barrier(barrier)
            for _ in range(n):
                time.sleep(cfg.wake_sleep)  # let the consumer block in get()
                put(time.perf_counter())
            (samples,) = collect()
    return statistics.median(samples[cfg.warmup :]) * 1e6


def sem_pingpong(cfg: Config) -> float:
    """Reference: median us per round trip with two bare POSIX semaphores."""
    import posix_ipc

    n = cfg.warmup + cfg.rounds
    names = [f"/{unique_name('sqbench_sem')}" for _ in range(2)]
    sems = []
    try:
        for name in names:
            sems.append(posix_ipc.Semaphore(name, posix_ipc.O_CREX, initial_value=0))
        a, b = sems
        barrier = CTX.Barrier(2)
        with children([(_sem_echo, (*names, barrier, n))], barrier) as collect:
            wait_barrier(barrier)
            samples = []
            for _ in range(n):
                t = time.perf_counter()
                a.release()
                b.acquire(OP_TIMEOUT)
                samples.append(time.perf_counter() - t)
            collect()
    finally:
        for s in sems:
            s.close()
        for name in names:
            with contextlib.suppress(posix_ipc.ExistentialError):
                posix_ipc.unlink_semaphore(name)
    return statistics.median(samples[cfg.warmup :]) * 1e6


@dataclass
class Workload:
    key: str
    title: str
    unit: str
    higher_is_better: bool
    run: Callable[[Impl, Config], float]


WORKLOADS = [
    Workload(
        "single_1x1",
        "1p->1c small dicts, single put/get",
        "items/s",
        True,
        lambda impl, cfg: throughput(impl, cfg, 1, 1, 1),
    ),
    Workload(
        "batch_1x1",
        "1p->1c small dicts, batches of 100",
        "items/s",
        True,
        lambda impl, cfg: throughput(impl, cfg, 1, 1, cfg.batch),
    ),
    Workload(
        "single_2x2",
        "2p->2c small dicts, single put/get",
        "items/s",
        True,
        lambda impl, cfg: throughput(impl, cfg, 2, 2, 1),
    ),
    Workload("pingpong", "ping-pong round trip (2 queues)", "us", False, pingpong),
    Workload("wakeup", "wake-up latency, blocked get()", "us", False, wakeup),
]


# --------------------------------------------------------------------------
# Driver and report
# --------------------------------------------------------------------------


@dataclass
class Cell:
    values: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def median(self) -> float | None:
        return statistics.median(self.values) if self.values else None


def parse_variant(text: str) -> dict[str, Any]:
    out = {}
    for part in filter(None, text.split(",")):
        key, sep, raw = part.partition("=")
        if not sep or not key.strip():
            raise argparse.ArgumentTypeError(f"bad --variant item {part!r}, want key=value")
        try:
            out[key.strip()] = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            out[key.strip()] = raw
    return out


def build_impls(keys: list[str], variants: list[dict]) -> list[Impl]:
    impls: list[Impl] = []
    for key in keys:
        if key == "sq":
            impls += [SharedQueueImpl(v) for v in variants] or [SharedQueueImpl()]
        elif key == "mp":
            impls.append(MpQueueImpl())
        elif key == "ff":
            impls.append(FasterFifoImpl())
        else:
            raise SystemExit(f"unknown --impl {key!r} (choose from sq, mp, ff)")
    return impls


def fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "error"
    if unit == "items/s":
        return f"{value:,.0f}"
    return f"{value:.1f}"


def fmt_cell(cell: Cell | None, unit: str) -> str:
    if cell is None:
        return "n/a"
    text = fmt(cell.median, unit)
    if len(cell.values) > 1 and cell.median:
        spread = (max(cell.values) - min(cell.values)) / 2 / cell.median
        text += f" ±{spread:.0%}"
    if cell.errors and cell.values:
        text += f" ({len(cell.errors)} failed)"
    return text


def ratio(a: Cell | None, b: Cell | None) -> str:
    if a is None or b is None or a.median is None or b.median is None:
        return "n/a"
    return f"{a.median / b.median:.2f}"


def render(
    workloads: list[Workload],
    results: dict,
    impls: list[Impl],
    missing: list[str],
    ref: Cell | None,
) -> str:
    """Markdown table; `missing` are labels of unavailable impls (shown as n/a)."""
    labels = [i.label for i in impls] + missing
    sq_labels = [i.label for i in impls if i.key == "sq"] or [
        lbl for lbl in missing if lbl.startswith("shared_queue")
    ]
    others = [("mp", "mp.Queue"), ("ff", "faster-fifo")]
    ratio_cols = [(s, o) for s in sq_labels for _, o in others if o in labels]
    head = ["workload", "unit", *labels] + [f"{s} / {o}" for s, o in ratio_cols]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for wl in workloads:
        row = results.get(wl.key, {})
        unit = f"{wl.unit} ({'higher' if wl.higher_is_better else 'lower'} is better)"
        title = wl.title + (" [a]" if wl.key == "batch_1x1" and "mp.Queue" in labels else "")
        cells = [fmt_cell(row.get(lbl), wl.unit) for lbl in labels]
        ratios = [ratio(row.get(s), row.get(o)) for s, o in ratio_cols]
        lines.append("| " + " | ".join([title, unit, *cells, *ratios]) + " |")
    if ref is not None:
        text = fmt_cell(ref, "us")
        blanks = [""] * (len(labels) + len(ratio_cols))
        lines.append(
            "| "
            + " | ".join(
                [
                    f"reference: bare posix_ipc semaphore ping-pong = **{text} us**",
                    "us (no queue, no pickling)",
                    *blanks,
                ]
            )
            + " |"
        )
    return "\n".join(lines)


def shm_entries() -> set[str]:
    try:
        return set(os.listdir(SHM_DIR))
    except OSError:
        return set()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer items, 3 repeats (< 60 s)")
    ap.add_argument("--repeats", type=int, help="repeats per workload (default 5, quick 3)")
    ap.add_argument("--json", metavar="PATH", help="also write raw results as JSON")
    ap.add_argument(
        "--impl", default="sq,mp,ff", help="comma-separated subset of sq,mp,ff (default: all)"
    )
    ap.add_argument(
        "--workload",
        default=",".join(w.key for w in WORKLOADS),
        help="comma-separated subset of: " + ",".join(w.key for w in WORKLOADS),
    )
    ap.add_argument("--no-ref", action="store_true", help="skip the posix_ipc reference row")
    ap.add_argument(
        "--variant",
        action="append",
        type=parse_variant,
        default=[],
        metavar="K=V[,K=V]",
        help="shared_queue variant (repeatable, one column each)",
    )
    args = ap.parse_args(argv)

    cfg = Config()
    if args.quick:
        cfg = Config(items=50_000, rounds=2_000, wake_samples=100, warmup=10)
    repeats = args.repeats or (3 if args.quick else 5)
    wanted = set(filter(None, args.workload.split(",")))
    workloads = [w for w in WORKLOADS if w.key in wanted]

    impls, missing = [], {}
    for impl in build_impls([k.strip() for k in args.impl.split(",") if k.strip()], args.variant):
        reason = impl.unavailable()
        if reason:
            missing[impl.label] = reason
            print(f"note: {impl.label} is n/a: {reason}", file=sys.stderr)
        else:
            impls.append(impl)

    shm_before = shm_entries()
    t_start = time.perf_counter()
    results: dict[str, dict[str, Cell]] = {
        w.key: {i.label: Cell() for i in impls} for w in workloads
    }
    for wl in workloads:
        for rep in range(repeats):
            for impl in impls:  # interleaved: every impl once per repeat
                cell = results[wl.key][impl.label]
                try:
                    cell.values.append(wl.run(impl, cfg))
                    status = fmt(cell.values[-1], wl.unit)
                except Exception as e:
                    cell.errors.append(f"{type(e).__name__}: {e}")
                    status = f"ERROR {type(e).__name__}"
                print(
                    f"[{time.perf_counter() - t_start:6.1f}s] {wl.key} #{rep + 1} "
                    f"{impl.label}: {status}",
                    file=sys.stderr,
                    flush=True,
                )

    ref = None
    if not args.no_ref:
        ref = Cell()
        for _ in range(repeats):
            try:
                ref.values.append(sem_pingpong(cfg))
            except Exception as e:
                ref.errors.append(f"{type(e).__name__}: {e}")
    elapsed = time.perf_counter() - t_start
    leaked = sorted(shm_entries() - shm_before)

    versions = {i.label: i.version() for i in impls}
    print(f"# shared_queue benchmark ({'quick' if args.quick else 'full'})\n")
    print(
        f"- start method: **fork**; timer: time.perf_counter; median of {repeats} repeats "
        f"(implementations interleaved per repeat); wall time {elapsed:.1f} s"
    )
    print(
        f"- python {platform.python_version()} on {platform.platform()}, "
        f"{os.cpu_count()} CPUs; versions: "
        + ", ".join(f"{k} {v}" for k, v in versions.items() if v)
    )
    print(
        f"- items per throughput run: {cfg.items:,}; ping-pong round trips: {cfg.rounds:,}; "
        f"wake-up samples: {cfg.wake_samples} after ~{cfg.wake_sleep * 1e3:.1f} ms sleeps; "
        f"warm-up discarded: {cfg.warmup}"
    )
    print(
        f"- queue size: capacity {cfg.capacity} x item_size {cfg.item_size} B "
        f"(mp.Queue maxsize={cfg.capacity}, faster-fifo {cfg.capacity * cfg.item_size:,} B)\n"
    )
    print(render(workloads, results, impls, list(missing), ref))
    print(
        "\nRatios are shared_queue / other of the medians: > 1 is better for items/s, "
        "< 1 is better for us. ±x% is half the min-max range over the repeats, relative to "
        "the median."
    )
    if "mp.Queue" in [i.label for i in impls] and "batch_1x1" in wanted:
        print("[a] mp.Queue has no batch API: it does single put/get in the batch row.")
    for label, reason in missing.items():
        print(f"- {label}: n/a ({reason})")
    for wl in workloads:
        for label, cell in results[wl.key].items():
            for err in dict.fromkeys(cell.errors):
                print(f"\n**error** {wl.key} / {label}:\n```\n{err.strip()}\n```")
    if ref is not None and ref.errors:
        print(f"\n**error** reference: {ref.errors[0]}")
    if leaked:
        print(f"\n**warning**: new entries left in {SHM_DIR}: {', '.join(leaked)}")

    if args.json:
        payload = {
            "mode": "quick" if args.quick else "full",
            "start_method": "fork",
            "repeats": repeats,
            "config": cfg.__dict__,
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "versions": versions,
            "unavailable": missing,
            "elapsed_s": elapsed,
            "leaked_shm": leaked,
            "results": {
                wl.key: {
                    "title": wl.title,
                    "unit": wl.unit,
                    "higher_is_better": wl.higher_is_better,
                    "impls": {
                        lbl: {"median": c.median, "values": c.values, "errors": c.errors}
                        for lbl, c in results[wl.key].items()
                    },
                }
                for wl in workloads
            },
            "reference_sem_pingpong_us": None
            if ref is None
            else {"median": ref.median, "values": ref.values, "errors": ref.errors},
        }
        Path(args.json).write_text(json.dumps(payload, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
