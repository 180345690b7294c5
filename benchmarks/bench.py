"""Side-by-side benchmark: shared_queue vs multiprocessing.Queue vs faster-fifo.

Run from the repository root::

    python benchmarks/bench.py                  # full run, 5 repeats, all sections
    python benchmarks/bench.py --quick          # fewer items, 3 repeats, < 90 s
    python benchmarks/bench.py --section arrays,async --quick
    python benchmarks/bench.py --repeats 7 --json out.json
    python benchmarks/bench.py --impl mp,ff     # only some of sq,mp,ff
    python benchmarks/bench.py --workload pingpong,wakeup --no-ref
    python benchmarks/bench.py --variant KEY=A --variant KEY=B   # see below
    python benchmarks/bench.py --variant nosafety --section small
    python benchmarks/plot.py out.json          # PNG bar charts into docs/img/

All implementations are measured in ONE run, interleaved (repeat 1 of every
implementation, then repeat 2, ...; every other repeat in reverse order) so
that slow drifts of a noisy machine hit all of them alike.  Worker processes
use the ``fork`` start method.  Every number in the tables is the median over
the repeats; time is taken with ``time.perf_counter`` (CLOCK_MONOTONIC on
Linux, so it is comparable across processes).

Sections (``--section``, default all; a workload in two sections runs once):

``small`` -- small dicts ``{"id": i, "name": "item", "vals": [1, 2, 3],
"x": 1.5}``, built before the clock starts:

1. ``single_1x1`` -- one producer process, one consumer process, one
   ``put``/``get`` per item.  Items per second from the producers' start
   (after a barrier) to the last consumer's end.  Higher is better.
2. ``batch_1x1`` -- the same with batches of 100: shared_queue uses
   ``put_batch``/``get_batch(100)``, faster-fifo ``put_many``/
   ``get_many(max_messages_to_get=100)``.  ``multiprocessing.Queue`` has no
   batch API, so it does single ``put``/``get`` here (see the footnote).
3. ``single_2x2`` -- two producers, two consumers, total items per second.
4. ``pingpong`` -- round trip over two queues between the parent and one
   child (``put`` request, child ``get`` + ``put`` reply, parent ``get``),
   payload a small int.  Median microseconds per round trip within a repeat.
   Lower is better.
5. ``wakeup`` -- a child is blocked in ``get()``; the parent sleeps ~2 ms and
   then puts ``time.perf_counter()``; the child computes ``now - sent``.
   Median microseconds.  Lower is better.

A reference row gives a bare ``posix_ipc`` semaphore ping-pong between two
processes (no queue, no pickling): a floor for any design that wakes the other
side with a semaphore.

``arrays`` -- float32 arrays of 64 KiB, 1 MiB and 16 MiB, 1 producer -> 1
consumer, GB/s (1 GB = 1e9 bytes) of array data from the producer's start to
the consumer's last ``get``.  The producer puts the same array over and over
(so the run moves ~0.6 GB, ~64-128 MB with ``--quick``); the consumer checks
the first array's dtype and size and drops the rest.  Columns:
``shared_queue[raw]`` (``raw=True``, ``item_size = nbytes + 4096``: the array
bytes are copied into the slot and out again, never pickled);
``shared_queue[typed]`` (``dtype=np.float32, shape=(n,)``, 1 MiB row only);
``shared_queue`` (pickle mode: the array goes as a protocol-5 out-of-band
buffer, same item_size); ``mp.Queue`` and ``faster-fifo`` pickle the array
(faster-fifo's ``max_size_bytes`` is ``capacity * item_size``, room for
several arrays).  The ``np.copyto`` column is an in-process reference: one
``np.copyto(dst, src)`` of the same size, repeated as often, timed in the
parent (a queue copies each array twice, into the slot and out of it, in two
processes).

``async`` -- shared_queue only (``n/a`` for the others, which have no async
API), beside the same workloads with a sync consumer: ``wakeup_async`` is
``wakeup`` with the child awaiting ``q.get_async()`` inside ``asyncio.run``;
``single_1x1_async`` is ``single_1x1`` with the consumer awaiting
``get_async()`` (the producer stays a sync process).

``safety`` -- the hot-path cost of crash safety.  The shipped design locks
each side with Linux OFD byte-range locks (``fcntl(fd, F_OFD_SETLKW, ...)``),
which the kernel drops when a holder dies.  "The same design without crash
safety" swaps those for POSIX semaphore mutexes (a killed holder leaves one
locked forever): see ``LockSwap`` below, a benchmark-only monkeypatch of
``shared_queue._queue.fcntl`` that leaves every other line of the code path
as it is.  Columns: ``shared_queue`` (as shipped), ``shared_queue[ofd+shim]``
(OFD locks called through the same Python shim as the swap, so that the shim's
own cost cancels out) and ``shared_queue[nosafety]``.  The cost is
``1 - safe / nosafety`` of the items/s: the share of throughput that crash
safety costs (the goal: at most 15%).  ``--variant nosafety`` (or
``ofdshim``) adds the swapped design as a column to the other sections.

Ratio columns are ``shared_queue / other`` of the medians: for items/s and
GB/s a ratio above 1 means shared_queue is faster; for microseconds a ratio
below 1 means shared_queue is faster.

Queue sizing: shared_queue gets ``capacity`` slots of ``item_size`` bytes;
``multiprocessing.Queue`` gets ``maxsize=capacity``; faster-fifo (bounded by
bytes) gets ``capacity * item_size`` bytes, i.e. the same shared-memory
footprint as shared_queue.

Robustness: children attach to shared_queue by name and ``close()`` at the
end, the parent ``close()``s and ``unlink()``s in ``finally``; every blocking
call has a timeout, children are joined with a timeout and killed if they
straggle, and a failing implementation shows ``error`` instead of stopping
the run.  Entries of this run (names contain ``sqbench_<pid>_``) left in
``/dev/shm`` are reported at the end.

``--variant key=value[,key=value...]`` (repeatable) adds one shared_queue
column per variant: if ``shared_queue`` has a module attribute ``key`` it is
set for that run (children inherit it through fork), otherwise ``key=value``
is passed to the ``SharedMemoryQueue`` constructor of the creating process
(children attach by name without it).  Values are Python literals when they
parse as one, strings otherwise.  The bare words ``nosafety`` and ``ofdshim``
select the lock swap described under ``safety``.  A constructor kwarg that the
library accepts but ignores gives identical columns, so check that a variant
really switches something.
"""

from __future__ import annotations

import argparse
import ast
import asyncio
import contextlib
import importlib
import inspect
import itertools
import json
import multiprocessing as mp
import os
import pickle
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
KIB, MIB = 1 << 10, 1 << 20
ARRAY_HEADROOM = 4096  # item_size = array bytes + this, for every array queue
COPYTO = "np.copyto"  # label of the in-process reference column of the arrays rows
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
    get_async: Callable[[], Any] | None = None  # a coroutine function, shared_queue only


@dataclass
class Handle:
    obj: Any  # the parent's queue object
    endpoint: Any  # what a forked child needs to attach


@dataclass
class ArraySpec:
    """The arrays of an arrays workload: what typed queues need to know."""

    dtype: Any
    shape: tuple[int, ...]


class Impl:
    """Factory/adapter for one queue implementation.

    ``roles`` say which workloads give it a column: ``base`` (small dicts, arrays, sync
    rows of the async section), ``raw`` / ``typed`` (arrays), ``safety``.
    """

    key = ""
    label = ""
    has_batch = True
    roles: frozenset[str] = frozenset({"base"})

    def unavailable(self) -> str | None:
        """None if usable, else a reason."""
        return None

    def create(self, capacity: int, item_size: int, array: ArraySpec | None = None) -> Handle:
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

    def create(self, capacity, item_size, array=None):
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

    def create(self, capacity, item_size, array=None):
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


class ZmqImpl(Impl):
    """pyzmq PUSH/PULL over ipc://: the arrays, ping-pong and wake-up rows.

    Numpy arrays go as a (dtype, shape) header frame plus the array's buffer, sent and received
    without copying (copy=False), the pyzmq zero-copy path; other objects are pickled. No
    small-dict throughput rows: there the consumer binds only after the producer has started
    sending, and in this harness some runs lost messages (2 of 3 timed out); a fair setup
    would need a broker device, which the other implementations do not pay for either.
    """

    key = "zmq"
    label = "pyzmq"
    has_batch = False
    roles = frozenset({"pair"})

    def unavailable(self):
        try:
            importlib.import_module("zmq")
        except Exception as e:
            return f"pyzmq not importable: {e!r}"
        return None

    def create(self, capacity, item_size, array=None):
        path = f"/tmp/{unique_name('sqbench_zmq')}.ipc"
        return Handle(_ZmqQueue(f"ipc://{path}", capacity), path)

    def attach(self, endpoint):
        return _ZmqQueue(f"ipc://{endpoint}", 0)

    def detach(self, q):
        q.close()

    def destroy(self, handle):
        handle.obj.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(handle.endpoint)

    def ops(self, q):
        def put_many(xs):
            for x in xs:
                q.put(x)

        return Ops(q.put, q.get, put_many, lambda n: [q.get()])

    def version(self):
        return _dist_version("pyzmq")


class _ZmqQueue:
    """The consumer binds a PULL socket, the producer connects a PUSH socket, lazily."""

    def __init__(self, address: str, hwm: int):
        self.address, self.hwm = address, hwm
        self._push = self._pull = None
        self._ctx = None

    def _socket(self, kind: int, bind: bool) -> Any:
        import zmq

        if self._ctx is None:
            self._ctx = zmq.Context()
        sock = self._ctx.socket(kind)
        sock.setsockopt(zmq.LINGER, int(OP_TIMEOUT * 1000))  # deliver what was sent
        if self.hwm:
            sock.setsockopt(zmq.SNDHWM if kind == zmq.PUSH else zmq.RCVHWM, self.hwm)
        sock.setsockopt(zmq.RCVTIMEO if kind == zmq.PULL else zmq.SNDTIMEO, int(OP_TIMEOUT * 1000))
        if bind:
            sock.bind(self.address)
        else:
            sock.connect(self.address)
        return sock

    def put(self, x: Any) -> None:
        import zmq

        if self._push is None:
            self._push = self._socket(zmq.PUSH, bind=False)
        if type(x).__name__ == "ndarray":
            header = pickle.dumps((x.dtype.str, x.shape))
            self._push.send_multipart([header, x], copy=False)
        else:
            self._push.send(pickle.dumps(x, protocol=5), copy=False)

    def get(self) -> Any:
        import zmq

        if self._pull is None:
            self._pull = self._socket(zmq.PULL, bind=True)
        frames = self._pull.recv_multipart(copy=False)
        if len(frames) == 2:
            import numpy as np

            dtype, shape = pickle.loads(frames[0].bytes)
            return np.frombuffer(frames[1].buffer, dtype).reshape(shape)
        return pickle.loads(frames[0].buffer)

    def close(self) -> None:
        for sock in (self._push, self._pull):
            if sock is not None:
                sock.close()
        if self._ctx is not None:
            self._ctx.term()


# ==========================================================================
# BENCHMARK-ONLY MONKEYPATCH -- "the same design without crash safety".
#
# shared_queue._queue._transfer takes a side's lock with
#     fcntl(fd, F_OFD_SETLKW, LOCK_OPS[side][0])   and releases it with
#     fcntl(fd, F_OFD_SETLK,  LOCK_OPS[side][1])
# through the module-level name `fcntl` of shared_queue._queue.  LockSwap
# replaces that one name, in the benchmark process before the children are
# forked (they inherit it), by a function that turns the same calls into
# acquire/release of a named POSIX semaphore mutex per queue and side
# (initial value 1; a holder killed inside the critical section would leave
# it locked forever, which is exactly the crash safety that OFD locks buy).
# Every other line of the put/get path runs unchanged.  Mode "shim" keeps the
# real OFD locks but calls them through the identical Python shim, so that
# "shim vs nosafety" isolates the lock mechanism from the shim's own cost.
# Never use this outside the benchmark: it removes crash safety.
# ==========================================================================

# fd -> {lock/unlock struct bytes: zero-argument callable}; one dict per process.
_LOCK_BY_FD: dict[int, dict[bytes, Callable[[], Any]]] = {}
# A forked child reopens its lock descriptors (shared_queue does that at fork), and a
# reused fd number must not find the parent's entry: start every child with an empty map.
os.register_at_fork(after_in_child=_LOCK_BY_FD.clear)


class LockSwap:
    """Benchmark-only: route shared_queue's OFD lock calls to semaphores or a shim."""

    def __init__(self, mode: str):
        if mode not in ("nosafety", "shim"):
            raise ValueError(mode)
        self.mode = mode
        self.sems: dict[str, tuple[Any, Any]] = {}  # queue name -> (producer, consumer) mutex
        self._real: Callable[..., Any] | None = None

    def add_queue(self, name: str) -> None:
        """In the parent, before the queue is used: create its two mutexes."""
        if self.mode != "nosafety":
            return
        import posix_ipc

        made = []
        try:
            for side in ("P", "C"):
                made.append(
                    posix_ipc.Semaphore(
                        f"/{name}.nosafety{side}", posix_ipc.O_CREX, mode=0o600, initial_value=1
                    )
                )
        except BaseException:
            for s in made:
                s.unlink()
                s.close()
            raise
        self.sems[name] = (made[0], made[1])

    def remove_queue(self, name: str) -> None:
        for s in self.sems.pop(name, ()):
            with contextlib.suppress(Exception):
                s.unlink()
            s.close()

    def _resolve(self, fd: int) -> dict[bytes, Callable[[], Any]]:
        """First call for this fd in this process: build its lock/unlock callables."""
        from shared_queue import _sync

        p_lock, p_unlock = _sync.LOCK_OPS[_sync.PRODUCER_LOCK]
        c_lock, c_unlock = _sync.LOCK_OPS[_sync.CONSUMER_LOCK]
        if self.mode == "shim":
            real, lk, ulk = self._real, _sync.SETLKW, _sync.SETLK
            ops = {
                p_lock: partial(real, fd, lk, p_lock),
                p_unlock: partial(real, fd, ulk, p_unlock),
                c_lock: partial(real, fd, lk, c_lock),
                c_unlock: partial(real, fd, ulk, c_unlock),
            }
        else:
            path = os.readlink(f"/proc/self/fd/{fd}")  # /dev/shm/<prefix>-<queue name>
            names = [n for n in self.sems if path.endswith(f"-{n}")]
            if len(names) != 1:
                raise RuntimeError(f"nosafety: fd {fd} ({path}) is no queue of this run")
            prod, cons = self.sems[names[0]]
            ops = {
                p_lock: prod.acquire,
                p_unlock: prod.release,
                c_lock: cons.acquire,
                c_unlock: cons.release,
            }
        _LOCK_BY_FD[fd] = ops
        return ops

    @contextlib.contextmanager
    def installed(self):
        """Patch shared_queue._queue.fcntl for the duration (children inherit it by fork)."""
        import shared_queue._queue as qmod

        self._real = real = qmod.fcntl
        by_fd, resolve = _LOCK_BY_FD, self._resolve
        by_fd.clear()

        def fcntl(fd: int, cmd: int, op: bytes) -> None:  # same hot path in both modes
            try:
                fn = by_fd[fd][op]
            except KeyError:
                fn = resolve(fd)[op]
            fn()

        qmod.fcntl = fcntl
        try:
            yield
        finally:
            qmod.fcntl = real
            by_fd.clear()


# ==========================================================================
# end of the benchmark-only monkeypatch
# ==========================================================================

_LOCK_VARIANTS = {"nosafety": "nosafety", "ofdshim": "shim"}


class SharedQueueImpl(Impl):
    key = "sq"
    has_batch = True

    def __init__(
        self,
        variant: dict[str, Any] | None = None,
        *,
        mode: str | None = None,  # None (pickle), "raw", "typed" or "view" (typed, get_view)
        locks: str | None = None,  # None (as shipped), "shim" or "nosafety": see LockSwap
        roles: frozenset[str] = frozenset({"base"}),
    ):
        self.variant = dict(variant or {})
        for word, lock_mode in _LOCK_VARIANTS.items():
            if self.variant.pop(word, False):
                locks = lock_mode
        self.mode, self.roles = mode, roles
        self.swap = LockSwap(locks) if locks else None
        tags = [f"{k}={v}" for k, v in self.variant.items()]
        tags += [mode] if mode else []
        tags += [{"shim": "ofd+shim", "nosafety": "nosafety"}[locks]] if locks else []
        self.label = f"shared_queue[{','.join(tags)}]" if tags else "shared_queue"
        self._mod = None
        self._module_attrs: dict[str, Any] = {}
        self._ctor_kwargs: dict[str, Any] = {}

    def unavailable(self):
        try:
            self._mod = importlib.import_module("shared_queue")
            self._mod.SharedMemoryQueue  # noqa: B018 - probe the attribute
            if self.swap is not None:
                qmod = importlib.import_module("shared_queue._queue")
                sync = importlib.import_module("shared_queue._sync")
                if not callable(getattr(qmod, "fcntl", None)) or not hasattr(sync, "LOCK_OPS"):
                    return "shared_queue._queue.fcntl / _sync.LOCK_OPS not found (lock swap)"
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
            with self.swap.installed() if self.swap else contextlib.nullcontext():
                yield
        finally:
            for k, v in saved.items():
                setattr(self._mod, k, v)

    def create(self, capacity, item_size, array=None):
        name = unique_name("sqbench")
        kwargs = dict(self._ctor_kwargs)
        if self.mode == "raw":
            kwargs["raw"] = True
        elif self.mode in ("typed", "view"):
            if array is None:
                raise BenchError("a typed queue needs an array workload")
            kwargs.update(dtype=array.dtype, shape=array.shape)
        if self.swap is not None:
            self.swap.add_queue(name)
        try:
            q = self._mod.SharedMemoryQueue(
                name, create=True, capacity=capacity, item_size=item_size, **kwargs
            )
        except BaseException:
            if self.swap is not None:
                self.swap.remove_queue(name)
            raise
        return Handle(q, name)

    def attach(self, endpoint):
        return self._mod.SharedMemoryQueue(endpoint)

    def detach(self, q):
        q.close()

    def destroy(self, handle):
        try:
            handle.obj.close()
        finally:
            try:
                handle.obj.unlink()
            finally:
                if self.swap is not None:
                    self.swap.remove_queue(handle.endpoint)

    def ops(self, q):
        # put_batch/get_batch may or may not take a timeout; pass it if they do.
        put_batch = _with_timeout_if_supported(q.put_batch)
        get_batch = _with_timeout_if_supported(q.get_batch)
        get_async = getattr(q, "get_async", None)
        return Ops(
            put=partial(q.put, timeout=OP_TIMEOUT),
            get=(
                partial(_view_get, q)
                if self.mode == "view"
                else partial(q.get, timeout=OP_TIMEOUT)
            ),
            put_many=put_batch,
            get_many=get_batch,
            get_async=partial(get_async, timeout=OP_TIMEOUT) if get_async else None,
        )

    def version(self):
        return getattr(self._mod, "__version__", "") + f" ({_git_rev()})"


def _view_get(q: Any) -> Any:
    """get_view instead of get: touch the item in place; the slot returns when it is dropped."""
    with q.get_view(timeout=OP_TIMEOUT) as arr:
        arr[0]  # read in place, no copy
    return arr


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
            ["git", "-C", str(REPO_ROOT), "describe", "--always", "--dirty"],
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
        grace = 5.0  # normal end: children are finishing (flushing, closing)
    except BaseException:
        grace = 0.5  # something failed: do not wait long for the others
        raise
    finally:
        with contextlib.suppress(Exception):
            barrier.abort()  # never leave anyone stuck at the barrier
        deadline = time.monotonic() + grace
        for p in procs:
            p.join(max(0.0, deadline - time.monotonic()))
        for p in procs:
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
def queues(impl: Impl, n: int, capacity: int, item_size: int, array: ArraySpec | None = None):
    """Create n queues of impl; destroy them on exit."""
    handles: list[Handle] = []
    with impl.active():
        try:
            for _ in range(n):
                handles.append(impl.create(capacity, item_size, array))
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


def _get_async(impl: Impl, q: Any) -> Callable[[], Any]:
    get_async = impl.ops(q).get_async
    if get_async is None:
        raise BenchError(f"{impl.label} has no get_async")
    return get_async


def _async_consumer(impl: Impl, endpoint, barrier, batch: int) -> tuple[int, float]:
    """_consumer with ``await get_async()`` in asyncio.run (single items only)."""
    if batch > 1:
        raise ValueError("the async consumer takes single items")
    q = impl.attach(endpoint)
    try:
        get_async = _get_async(impl, q)

        async def drain() -> tuple[int, float]:
            barrier.wait(OP_TIMEOUT)  # inside the loop: its start-up is not timed
            count = 0
            while (await get_async()) is not None:
                count += 1
            return count, time.perf_counter()

        return asyncio.run(drain())
    finally:
        impl.detach(q)


def _array_producer(impl: Impl, endpoint, barrier, arr, n: int) -> float:
    q = impl.attach(endpoint)
    try:
        put = impl.ops(q).put
        barrier.wait(OP_TIMEOUT)
        t0 = time.perf_counter()
        for _ in range(n):
            put(arr)  # never modified: mp.Queue pickles it later, in its feeder thread
        return t0
    finally:
        impl.detach(q)


def _array_consumer(impl: Impl, endpoint, barrier, n: int, nbytes: int) -> tuple[int, float]:
    import numpy as np

    q = impl.attach(endpoint)
    try:
        get = impl.ops(q).get
        barrier.wait(OP_TIMEOUT)
        first = get()
        if not (
            isinstance(first, np.ndarray) and first.dtype == np.float32 and first.nbytes == nbytes
        ):
            raise BenchError(f"got {type(first).__name__} {getattr(first, 'dtype', '')}")
        del first  # a get_view array keeps its slot (and those after it) while it lives
        for _ in range(n - 1):
            get()
        return n, time.perf_counter()
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


def _wake_consumer(impl: Impl, endpoint, barrier, n: int, use_async: bool) -> list[float]:
    q = impl.attach(endpoint)
    try:
        if use_async:
            get_async = _get_async(impl, q)

            async def wake() -> list[float]:
                barrier.wait(OP_TIMEOUT)
                out = []
                for _ in range(n):
                    sent = await get_async()
                    out.append(time.perf_counter() - sent)
                return out

            return asyncio.run(wake())
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

ARRAY_SIZES = (64 * KIB, MIB, 16 * MIB)
ARRAY_CAPACITY = {64 * KIB: 64, MIB: 16, 16 * MIB: 4}  # slots: 4-64 MiB of shared memory


@dataclass
class Config:
    items: int = 200_000
    rounds: int = 5_000  # ping-pong round trips
    wake_samples: int = 200
    wake_sleep: float = 0.002
    warmup: int = 20  # discarded round trips / wake-ups
    capacity: int = 1000
    item_size: int = 4096
    batch: int = 100
    array_bytes: int = 640 * MIB  # array data per arrays run
    array_min_items: int = 8

    def array_items(self, nbytes: int) -> int:
        return max(self.array_min_items, self.array_bytes // nbytes)


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
    with queues(impl, 1, cfg.capacity, cfg.item_size) as (h,):
        specs = [(_producer, (impl, h.endpoint, barrier, chunk, batch)) for chunk in chunks]
        specs += [(consumer, (impl, h.endpoint, barrier, batch))] * consumers
        with children(specs, barrier) as collect:
            wait_barrier(barrier)
            results = collect()
    starts = results[:producers]
    counts, ends = zip(*results[producers:], strict=True)
    total = per_producer * producers
    if sum(counts) != total:
        raise BenchError(f"consumers got {sum(counts)} items, expected {total}")
    return total / (max(ends) - min(starts))


def _float32(nbytes: int):
    import numpy as np

    return np.full(nbytes // 4, 1.5, dtype=np.float32)


def array_throughput(impl: Impl, cfg: Config, nbytes: int) -> float:
    """GB/s of float32 arrays of `nbytes` bytes, 1 producer -> 1 consumer process."""
    arr = _float32(nbytes)
    n = cfg.array_items(nbytes)
    barrier = CTX.Barrier(3)
    spec = ArraySpec(arr.dtype, arr.shape)
    with queues(impl, 1, ARRAY_CAPACITY[nbytes], nbytes + ARRAY_HEADROOM, spec) as (h,):
        specs = [
            (_array_producer, (impl, h.endpoint, barrier, arr, n)),
            (_array_consumer, (impl, h.endpoint, barrier, n, nbytes)),
        ]
        with children(specs, barrier) as collect:
            wait_barrier(barrier)
            t0, (count, t1) = collect()
    if count != n:
        raise BenchError(f"consumer got {count} arrays, expected {n}")
    return n * nbytes / (t1 - t0) / 1e9


def copyto_rate(cfg: Config, nbytes: int) -> float:
    """Reference: GB/s of in-process np.copyto of the same arrays, as many times."""
    import numpy as np

    src = _float32(nbytes)
    dst = np.empty_like(src)
    np.copyto(dst, src)  # fault the pages in first
    n = cfg.array_items(nbytes)
    t = time.perf_counter()
    for _ in range(n):
        np.copyto(dst, src)
    return n * nbytes / (time.perf_counter() - t) / 1e9


def pingpong(impl: Impl, cfg: Config) -> float:
    """Median us per round trip parent -> child -> parent over two queues."""
    n = cfg.warmup + cfg.rounds
    barrier = CTX.Barrier(2)
    with queues(impl, 2, cfg.capacity, cfg.item_size) as (h_req, h_resp):
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


def wakeup(impl: Impl, cfg: Config, use_async: bool = False) -> float:
    """Median us from put(perf_counter()) to a blocked consumer's return."""
    n = cfg.warmup + cfg.wake_samples
    barrier = CTX.Barrier(2)
    with queues(impl, 1, cfg.capacity, cfg.item_size) as (h,):
        put = impl.ops(h.obj).put
        spec = (_wake_consumer, (impl, h.endpoint, barrier, n, use_async))
        with children([spec], barrier) as collect:
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


def _base(impl: Impl) -> bool:
    return "base" in impl.roles


def _base_pair(impl: Impl) -> bool:
    """Latency workloads: one process on each side, so pyzmq too."""
    return bool(impl.roles & {"base", "pair"})


def _base_sq(impl: Impl) -> bool:
    return "base" in impl.roles and impl.key == "sq"


def _safety(impl: Impl) -> bool:
    return "safety" in impl.roles


def _arrays_for(nbytes: int) -> Callable[[Impl], bool]:
    def wants(impl: Impl) -> bool:
        return bool(impl.roles & {"base", "raw", "pair"}) or (
            "typed" in impl.roles and nbytes == MIB
        )

    return wants


@dataclass
class Workload:
    key: str
    title: str
    unit: str
    higher_is_better: bool
    run: Callable[[Impl, Config], float]
    wants: Callable[[Impl], bool] = _base  # which implementations get a column
    ref: Callable[[Config], float] | None = None  # in-process reference column (COPYTO)


def _size(nbytes: int) -> str:
    return f"{nbytes // MIB} MiB" if nbytes >= MIB else f"{nbytes // KIB} KiB"


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
    Workload("pingpong", "ping-pong round trip (2 queues)", "us", False, pingpong, _base_pair),
    Workload("wakeup", "wake-up latency, blocked get()", "us", False, wakeup, _base_pair),
    *(
        Workload(
            f"array_{_size(n).replace(' ', '').lower()}",
            f"float32 arrays {_size(n)}, 1p->1c",
            "GB/s",
            True,
            partial(array_throughput, nbytes=n),
            _arrays_for(n),
            partial(copyto_rate, nbytes=n),
        )
        for n in ARRAY_SIZES
    ),
    Workload(
        "wakeup_async",
        "wake-up latency, await get_async()",
        "us",
        False,
        lambda impl, cfg: wakeup(impl, cfg, use_async=True),
        _base_sq,
    ),
    Workload(
        "single_1x1_async",
        "1p->1c small dicts, await get_async()",
        "items/s",
        True,
        lambda impl, cfg: throughput(impl, cfg, 1, 1, 1, consumer=_async_consumer),
        _base_sq,
    ),
    Workload(
        "safety_single_1x1",
        "1p->1c small dicts, single put/get",
        "items/s",
        True,
        lambda impl, cfg: throughput(impl, cfg, 1, 1, 1),
        _safety,
    ),
    Workload(
        "safety_single_2x2",
        "2p->2c small dicts, single put/get",
        "items/s",
        True,
        lambda impl, cfg: throughput(impl, cfg, 2, 2, 1),
        _safety,
    ),
]
WL_BY_KEY = {w.key: w for w in WORKLOADS}
SECTIONS = {
    "small": ["single_1x1", "batch_1x1", "single_2x2", "pingpong", "wakeup"],
    "arrays": [w.key for w in WORKLOADS if w.key.startswith("array_")],
    "async": ["wakeup", "wakeup_async", "single_1x1", "single_1x1_async"],
    "safety": ["safety_single_1x1", "safety_single_2x2"],
}
ASYNC_PAIRS = [("wakeup_async", "wakeup"), ("single_1x1_async", "single_1x1")]
SAFE_LABEL, SHIM_LABEL, NOSAFETY_LABEL = (
    "shared_queue",
    "shared_queue[ofd+shim]",
    "shared_queue[nosafety]",
)


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
    out: dict[str, Any] = {}
    for part in filter(None, text.split(",")):
        key, sep, raw = part.partition("=")
        if not sep and key.strip() in _LOCK_VARIANTS:
            out[key.strip()] = True
            continue
        if not sep or not key.strip():
            raise argparse.ArgumentTypeError(
                f"bad --variant item {part!r}, want key=value, nosafety or ofdshim"
            )
        try:
            out[key.strip()] = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            out[key.strip()] = raw
    return out


def build_impls(keys: list[str], variants: list[dict]) -> list[Impl]:
    """Every implementation column any workload may want, in column order."""
    impls: list[Impl] = []
    for key in keys:
        if key == "sq":
            impls += [
                SharedQueueImpl(mode="raw", roles=frozenset({"raw"})),
                SharedQueueImpl(mode="typed", roles=frozenset({"typed"})),
                SharedQueueImpl(mode="view", roles=frozenset({"typed"})),
            ]
            if variants:
                impls += [SharedQueueImpl(v) for v in variants]
                impls.append(SharedQueueImpl(roles=frozenset({"safety"})))
            else:
                impls.append(SharedQueueImpl(roles=frozenset({"base", "safety"})))
            impls += [
                SharedQueueImpl(locks="shim", roles=frozenset({"safety"})),
                SharedQueueImpl(locks="nosafety", roles=frozenset({"safety"})),
            ]
        elif key == "mp":
            impls.append(MpQueueImpl())
        elif key == "ff":
            impls.append(FasterFifoImpl())
        elif key == "zmq":
            impls.append(ZmqImpl())
        else:
            raise SystemExit(f"unknown --impl {key!r} (choose from sq, mp, ff, zmq)")
    unique: dict[str, Impl] = {}
    for impl in impls:  # e.g. --variant nosafety is also the safety section's column
        if impl.label in unique:
            unique[impl.label].roles |= impl.roles
        else:
            unique[impl.label] = impl
    return list(unique.values())


def fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "error"
    if unit == "items/s":
        return f"{value:,.0f}"
    if unit == "GB/s":
        return f"{value:.2f}"
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


def safety_cost(safe: Cell | None, nosafety: Cell | None) -> dict | None:
    """Share of throughput lost to crash safety: 1 - safe / nosafety (medians, and per repeat).

    Repeats are paired by index (interleaved runs) when neither cell has failures.
    """
    if safe is None or nosafety is None or not safe.median or not nosafety.median:
        return None
    paired = []
    if not safe.errors and not nosafety.errors:
        paired = [1 - a / b for a, b in zip(safe.values, nosafety.values, strict=False)]
    return {"cost": 1 - safe.median / nosafety.median, "per_repeat": paired}


def fmt_cost(cost: dict | None) -> str:
    if cost is None:
        return "n/a"
    text = f"{cost['cost']:+.1%}"
    if len(cost["per_repeat"]) > 1:
        text += f" (per repeat {min(cost['per_repeat']):+.0%}..{max(cost['per_repeat']):+.0%})"
    return text


def section_columns(keys: list[str], impls: list[Impl]) -> list[str]:
    labels = [i.label for i in impls if any(WL_BY_KEY[k].wants(i) for k in keys)]
    if any(WL_BY_KEY[k].ref for k in keys):
        labels.append(COPYTO)
    return labels


def render(section: str, keys: list[str], results: dict, impls: list[Impl]) -> str:
    """Markdown table of one section; impls include unavailable ones (shown as n/a)."""
    labels = section_columns(keys, impls)
    sq_labels = [i.label for i in impls if i.key == "sq" and i.label in labels]
    extra: list[tuple[str, Callable[[dict], str]]] = []
    if section == "safety":
        for safe in (SAFE_LABEL, SHIM_LABEL):
            if safe in labels and NOSAFETY_LABEL in labels:
                extra.append(
                    (
                        f"cost: 1 - {safe} / nosafety",
                        lambda row, s=safe: fmt_cost(
                            safety_cost(row.get(s), row.get(NOSAFETY_LABEL))
                        ),
                    )
                )
    else:
        others = [o for o in ("mp.Queue", "faster-fifo", COPYTO) if o in labels]
        for o in others:
            for s in sq_labels:
                extra.append((f"{s} / {o}", lambda row, s=s, o=o: ratio(row.get(s), row.get(o))))
    head = ["workload", "unit", *labels] + [h for h, _ in extra]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for key in keys:
        wl = WL_BY_KEY[key]
        row = results.get(key, {})
        unit = f"{wl.unit} ({'higher' if wl.higher_is_better else 'lower'} is better)"
        title = wl.title + (" [a]" if key == "batch_1x1" and "mp.Queue" in labels else "")
        cells = [fmt_cell(row.get(lbl), wl.unit) for lbl in labels]
        lines.append("| " + " | ".join([title, unit, *cells, *(f(row) for _, f in extra)]) + " |")
    return "\n".join(lines)


def async_summary(results: dict, impls: list[Impl]) -> dict[str, dict[str, Any]]:
    """shared_queue async vs sync medians of the async section's row pairs."""
    out: dict[str, dict[str, Any]] = {}
    for akey, skey in ASYNC_PAIRS:
        for impl in impls:
            a = results.get(akey, {}).get(impl.label)
            s = results.get(skey, {}).get(impl.label)
            if a is None or s is None or not a.median or not s.median:
                continue
            out.setdefault(akey, {})[impl.label] = {
                "async": a.median,
                "sync": s.median,
                "async_over_sync": a.median / s.median,
            }
    return out


def shm_entries() -> set[str]:
    try:
        return set(os.listdir(SHM_DIR))
    except OSError:
        return set()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer items, 3 repeats (< 90 s)")
    ap.add_argument("--repeats", type=int, help="repeats per workload (default 5, quick 3)")
    ap.add_argument("--json", metavar="PATH", help="also write raw results as JSON")
    ap.add_argument(
        "--impl",
        default="sq,mp,ff,zmq",
        help="comma-separated subset of sq,mp,ff,zmq (default: all)",
    )
    ap.add_argument(
        "--section",
        default=",".join(SECTIONS),
        help="comma-separated subset of: " + ",".join(SECTIONS) + " (default: all)",
    )
    ap.add_argument(
        "--workload",
        help="comma-separated subset of the sections' workloads: "
        + ",".join(w.key for w in WORKLOADS),
    )
    ap.add_argument("--no-ref", action="store_true", help="skip the posix_ipc reference row")
    ap.add_argument(
        "--variant",
        action="append",
        type=parse_variant,
        default=[],
        metavar="K=V[,K=V]",
        help="shared_queue variant (repeatable, one column each); also: nosafety, ofdshim",
    )
    args = ap.parse_args(argv)

    cfg = Config()
    if args.quick:
        cfg = Config(
            items=30_000,
            rounds=1_000,
            wake_samples=60,
            warmup=10,
            array_bytes=64 * MIB,
        )
    repeats = args.repeats or (3 if args.quick else 5)
    sections = [s.strip() for s in args.section.split(",") if s.strip()]
    for s in sections:
        if s not in SECTIONS:
            raise SystemExit(f"unknown --section {s!r} (choose from {', '.join(SECTIONS)})")
    wanted = set(filter(None, (args.workload or "").split(","))) or set(WL_BY_KEY)
    unknown = wanted - set(WL_BY_KEY)
    if unknown:
        raise SystemExit(f"unknown --workload {', '.join(sorted(unknown))}")
    sec_keys = {s: [k for k in SECTIONS[s] if k in wanted] for s in sections}
    sec_keys = {s: ks for s, ks in sec_keys.items() if ks}
    workloads = [WL_BY_KEY[k] for k in dict.fromkeys(k for ks in sec_keys.values() for k in ks)]
    if not workloads:
        raise SystemExit("no workload selected")

    all_impls = build_impls([k.strip() for k in args.impl.split(",") if k.strip()], args.variant)
    all_impls = [i for i in all_impls if any(w.wants(i) for w in workloads)]
    sec_keys = {
        s: [k for k in ks if WL_BY_KEY[k].ref or any(WL_BY_KEY[k].wants(i) for i in all_impls)]
        for s, ks in sec_keys.items()
    }
    sec_keys = {s: ks for s, ks in sec_keys.items() if ks}
    workloads = [w for w in workloads if any(w.key in ks for ks in sec_keys.values())]
    if not workloads:
        raise SystemExit("no workload has an implementation to run (see --impl)")
    impls, missing = [], {}
    for impl in all_impls:
        reason = impl.unavailable()
        if reason:
            missing[impl.label] = reason
            print(f"note: {impl.label} is n/a: {reason}", file=sys.stderr)
        else:
            impls.append(impl)

    versions: dict[str, str] = {}  # one entry per library; taken before the tree may change
    for impl in impls:
        base_label = impl.label.split("[")[0]
        if base_label not in versions:
            versions[base_label] = impl.version()
    shm_before = shm_entries()
    t_start = time.perf_counter()
    results: dict[str, dict[str, Cell]] = {}
    for wl in workloads:
        results[wl.key] = {i.label: Cell() for i in impls if wl.wants(i)}
        if wl.ref is not None:
            results[wl.key][COPYTO] = Cell()
    ref = None if args.no_ref or "pingpong" not in results else Cell()

    def measure(what: str, cell: Cell, fn: Callable, *fn_args: Any) -> None:
        try:
            cell.values.append(fn(*fn_args))
            status = f"{cell.values[-1]:,.2f}"
        except Exception as e:
            cell.errors.append(f"{type(e).__name__}: {str(e) or repr(e)}")
            status = f"ERROR {type(e).__name__}"
        elapsed = time.perf_counter() - t_start
        print(f"[{elapsed:6.1f}s] {what}: {status}", file=sys.stderr, flush=True)

    for wl in workloads:
        cols = [i for i in impls if wl.wants(i)]
        for rep in range(repeats):
            # Interleaved: every impl once per repeat, every other repeat in reverse order.
            for impl in cols if rep % 2 == 0 else cols[::-1]:
                cell = results[wl.key][impl.label]
                measure(f"{wl.key} #{rep + 1} {impl.label}", cell, wl.run, impl, cfg)
            if wl.ref is not None:
                cell = results[wl.key][COPYTO]
                measure(f"{wl.key} #{rep + 1} {COPYTO}", cell, wl.ref, cfg)
            if ref is not None and wl.key == "pingpong":
                measure(f"{wl.key} #{rep + 1} reference", ref, sem_pingpong, cfg)
    elapsed = time.perf_counter() - t_start
    marker = f"sqbench_{os.getpid()}_"  # in every queue/semaphore name this run made
    leaked = sorted(e for e in shm_entries() - shm_before if marker in e)

    labels = [i.label for i in impls]
    print(f"# shared_queue benchmark ({'quick' if args.quick else 'full'})\n")
    print(
        f"- start method: **fork**; timer: time.perf_counter; median of {repeats} repeats "
        f"(implementations interleaved per repeat, alternating order); "
        f"wall time {elapsed:.1f} s"
    )
    print(
        f"- python {platform.python_version()} on {platform.platform()}, "
        f"{os.cpu_count()} CPUs; versions: "
        + ", ".join(f"{k} {v}" for k, v in versions.items() if v)
    )
    if {"small", "async", "safety"} & set(sec_keys):
        print(
            f"- small dicts: {cfg.items:,} items per throughput run; ping-pong round trips: "
            f"{cfg.rounds:,}; wake-up samples: {cfg.wake_samples} after ~"
            f"{cfg.wake_sleep * 1e3:.1f} ms sleeps; warm-up discarded: {cfg.warmup}; queue "
            f"capacity {cfg.capacity} x item_size {cfg.item_size} B (mp.Queue "
            f"maxsize={cfg.capacity}, faster-fifo {cfg.capacity * cfg.item_size:,} B)"
        )
    if "arrays" in sec_keys:
        print(
            "- arrays: float32, "
            + ", ".join(
                f"{_size(n)} x {cfg.array_items(n):,} (capacity {ARRAY_CAPACITY[n]})"
                for n in ARRAY_SIZES
            )
            + f"; item_size = array bytes + {ARRAY_HEADROOM}; GB = 1e9 bytes"
        )
    for section, keys in sec_keys.items():
        print(f"\n## {section}\n")
        print(render(section, keys, results, all_impls))
        if section == "small" and ref is not None:
            print(
                f"\nReference: bare posix_ipc semaphore ping-pong = **{fmt_cell(ref, 'us')} us** "
                "per round trip (no queue, no pickling)."
            )
            if ref.errors:
                print(f"\n**error** reference: {ref.errors[0]}")
        if section == "small" and "mp.Queue" in labels and "batch_1x1" in keys:
            print("\n[a] mp.Queue has no batch API: it does single put/get in the batch row.")
        if section == "arrays":
            print(
                "\n`shared_queue` here is pickle mode (the array travels as a protocol-5 "
                "out-of-band buffer); `[raw]` is raw=True; `[typed]` is dtype/shape slots "
                f"(1 MiB row only). `{COPYTO}` is one in-process copy of the same size, in the "
                "parent; a queue copies every array twice (into the slot, out of it)."
            )
        if section == "async":
            print("\nmp.Queue and faster-fifo have no async API (n/a). Async vs sync:\n")
            for akey, per_impl in async_summary(results, impls).items():
                unit = WL_BY_KEY[akey].unit
                for label, s in per_impl.items():
                    print(
                        f"- {label}: {WL_BY_KEY[akey].title}: {fmt(s['async'], unit)} {unit} "
                        f"vs sync {fmt(s['sync'], unit)} {unit} (async / sync "
                        f"{s['async_over_sync']:.2f})"
                    )
        if section == "safety":
            print(
                "\nCost = 1 - items/s with crash safety / items/s without it (POSIX semaphore "
                "mutexes patched in for the OFD locks, benchmark-only); goal <= 15%. "
                "`[ofd+shim]` calls the real OFD locks through the same Python shim as the "
                "patch, so its cost column compares the lock mechanisms alone; "
                "`shared_queue` is the library as shipped (the shim's own overhead makes its "
                "cost column read slightly low)."
            )
    print(
        "\nRatios are shared_queue / other of the medians: > 1 is better for items/s and GB/s, "
        "< 1 is better for us. ±x% is half the min-max range over the repeats, relative to "
        "the median. n/a: not applicable or not available."
    )
    for label, reason in missing.items():
        print(f"- {label}: n/a ({reason})")
    for wl in workloads:
        for label, cell in results[wl.key].items():
            for err in dict.fromkeys(cell.errors):
                print(f"\n**error** {wl.key} / {label}:\n```\n{err.strip()}\n```")
    if leaked:
        print(f"\n**warning**: new entries left in {SHM_DIR}: {', '.join(leaked)}")

    if args.json:
        payload = {
            "mode": "quick" if args.quick else "full",
            "start_method": "fork",
            "repeats": repeats,
            "config": cfg.__dict__,
            "sections": sec_keys,
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
                    "reference": COPYTO if wl.ref is not None else None,
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
            "async_vs_sync": async_summary(results, impls),
            "safety_cost": {
                key: {
                    safe: safety_cost(results[key].get(safe), results[key].get(NOSAFETY_LABEL))
                    for safe in (SAFE_LABEL, SHIM_LABEL)
                }
                for key in sec_keys.get("safety", [])
            },
        }
        Path(args.json).write_text(json.dumps(payload, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
