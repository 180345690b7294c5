"""Section ``arrays``: float32 arrays of 64 KiB, 1 MiB and 16 MiB, 1 producer -> 1 consumer.

GB/s (1 GB = 1e9 bytes) of array data from the producer's start to the consumer's last
``get``.  The producer puts the same array over and over (so the run moves ~0.6 GB,
~64-128 MB with ``--quick``); the consumer checks the first array's dtype and size and
drops the rest.  Columns: ``shared_queue[raw]`` (``raw=True``, ``item_size = nbytes +
4096``: the array bytes are copied into the slot and out again, never pickled);
``shared_queue[typed]`` (``dtype=np.float32, shape=(n,)``, 1 MiB and 16 MiB rows);
``shared_queue[view]`` (typed, read with ``get_view``, 1 MiB and 16 MiB rows);
``shared_queue`` (pickle mode: the array goes as a protocol-5 out-of-band buffer, same
item_size); ``mp.Queue`` and ``faster-fifo`` pickle the array (faster-fifo's
``max_size_bytes`` is ``capacity * item_size``, room for several arrays); pyzmq sends it as
a header frame plus the array's buffer, without copying, both ways (``copy=False``), with
the high-water mark at the queue's capacity.  The
``np.copyto`` column is an in-process reference: one ``np.copyto(dst, src)`` of the same
size, repeated as often, timed in the parent (a queue copies each array twice, into the
slot and out of it, in two processes). Its source and destination both start on a 64-byte
boundary: on the benchmark machine (AMD EPYC, glibc 2.36) a copy of 16 KiB to ~1 MiB whose
source and destination differ in alignment modulo 64 runs up to 13x slower (glibc's
``rep movsb`` path), and numpy's own 64 KiB arrays land at any offset, which made the
reference swing between 2 and 23 GB/s from run to run. The arrays the producers put are
ordinary ``np.full`` arrays, as a user's would be.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial

from ..common import CTX, KIB, MIB, OP_TIMEOUT, BenchError
from ..impls.base import ArraySpec, Impl
from ..procs import Ending, children, queues, wait_barrier
from .base import Config, Workload, size_label

ARRAY_SIZES = (64 * KIB, MIB, 16 * MIB)
ARRAY_CAPACITY = {64 * KIB: 64, MIB: 16, 16 * MIB: 4}  # slots: 4-64 MiB of shared memory
ARRAY_HEADROOM = 4096  # item_size = array bytes + this, for every array queue
TYPED_SIZES = (MIB, 16 * MIB)  # the rows with typed and get_view columns
ALIGN = 64  # the np.copyto reference copies between 64-byte aligned buffers
COPYTO = "np.copyto"  # label of the in-process reference column of the arrays rows


def _float32(nbytes: int):
    import numpy as np

    return np.full(nbytes // 4, 1.5, dtype=np.float32)


def _array_producer(impl: Impl, endpoint, barrier, arr, n: int, ending: Ending) -> float:
    q = impl.attach(endpoint)
    try:
        put = impl.ops(q).put
        barrier.wait(OP_TIMEOUT)
        t0 = time.perf_counter()
        for _ in range(n):
            put(arr)  # never modified: mp.Queue pickles it later, in its feeder thread
        ending.wait_consumers()
        return t0
    finally:
        impl.detach(q)


def _array_consumer(
    impl: Impl, endpoint, barrier, n: int, nbytes: int, ending: Ending
) -> tuple[int, float]:
    import numpy as np

    q = impl.attach(endpoint)
    try:
        impl.bind_consumer(q)
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
        ending.consumer_done()
        impl.detach(q)


def array_throughput(impl: Impl, cfg: Config, nbytes: int) -> float:
    """GB/s of float32 arrays of `nbytes` bytes, 1 producer -> 1 consumer process."""
    arr = _float32(nbytes)
    n = cfg.array_items(nbytes)
    barrier = CTX.Barrier(3)
    ending = Ending(1, 1)
    spec = ArraySpec(arr.dtype, arr.shape)
    with queues(impl, 1, ARRAY_CAPACITY[nbytes], nbytes + ARRAY_HEADROOM, spec) as (h,):
        specs = [
            (_array_producer, (impl, h.endpoint, barrier, arr, n, ending)),
            (_array_consumer, (impl, h.endpoint, barrier, n, nbytes, ending)),
        ]
        with children(specs, barrier) as collect:
            wait_barrier(barrier)
            t0, (count, t1) = collect()
    if count != n:
        raise BenchError(f"consumer got {count} arrays, expected {n}")
    return n * nbytes / (t1 - t0) / 1e9


def _aligned_float32(nbytes: int):
    """A float32 array of `nbytes` bytes whose data starts on a 64-byte boundary."""
    import numpy as np

    raw = np.empty(nbytes + ALIGN, np.uint8)
    start = -raw.ctypes.data % ALIGN
    return raw[start : start + nbytes].view(np.float32)


def copyto_rate(cfg: Config, nbytes: int) -> float:
    """Reference: GB/s of in-process np.copyto of the same arrays, as many times."""
    import numpy as np

    src, dst = _aligned_float32(nbytes), _aligned_float32(nbytes)
    src[:] = 1.5
    np.copyto(dst, src)  # fault the pages in first
    n = cfg.array_items(nbytes)
    t = time.perf_counter()
    for _ in range(n):
        np.copyto(dst, src)
    return n * nbytes / (time.perf_counter() - t) / 1e9


def _arrays_for(nbytes: int) -> Callable[[Impl], bool]:
    def wants(impl: Impl) -> bool:
        return bool(impl.roles & {"base", "raw"}) or (
            "typed" in impl.roles and nbytes in TYPED_SIZES
        )

    return wants


ROWS = [
    Workload(
        f"array_{size_label(n).replace(' ', '').lower()}",
        f"float32 arrays {size_label(n)}, 1p->1c",
        "GB/s",
        True,
        partial(array_throughput, nbytes=n),
        _arrays_for(n),
        partial(copyto_rate, nbytes=n),
    )
    for n in ARRAY_SIZES
]
SECTION = [w.key for w in ROWS]
