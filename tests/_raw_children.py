"""Targets run in the child processes of test_raw.py.

A module of their own, importable by name, for the reasons given in ``_children.py``: spawn
children unpickle a target by reference, and need not import pytest. A child reports through
``out`` and ``sums`` (``multiprocessing`` queues, independent of the code under test) and lets
any failure propagate, so it exits non-zero and the parent sees it.

The array streams are generated from a seed by ``stream_array``, which parent and child share.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

from shared_queue import SharedMemoryQueue

WAIT = 40.0  # seconds; as conftest.TIMEOUT, only reached on a deadlock


def digest(arr: Any) -> str:
    """sha256 of an array's bytes in C order (the same for any memory layout)."""
    return hashlib.sha256(np.ascontiguousarray(arr).tobytes()).hexdigest()


def describe(arr: np.ndarray[Any, Any]) -> tuple[tuple[int, ...], str, str]:
    """What the other side checks an array against: shape, dtype and digest."""
    return arr.shape, arr.dtype.str, digest(arr)


def stream_array(rng: np.random.Generator) -> np.ndarray[Any, Any]:
    """A float32 array of random shape (0 to 3 dims of 0 to 16), in C order, F order or strided."""
    ndim = int(rng.integers(0, 4))
    shape = tuple(int(d) for d in rng.integers(0, 17, size=ndim))
    arr = rng.standard_normal(shape).astype(np.float32)
    layout = int(rng.integers(0, 3))
    if layout == 1:
        arr = np.asfortranarray(arr)
    elif layout == 2 and ndim:
        base = rng.standard_normal((2 * shape[0], *shape[1:])).astype(np.float32)
        arr = base[::2]
    return arr


def _attach(q: SharedMemoryQueue | str) -> SharedMemoryQueue:
    return SharedMemoryQueue(q) if isinstance(q, str) else q


def _what(q: SharedMemoryQueue) -> tuple[bool, str | None, tuple[int, ...] | None, int]:
    return q.raw, None if q.dtype is None else q.dtype.str, q.shape, q.item_size


def produce_arrays(q: SharedMemoryQueue | str, out: Any, sums: Any, n: int, seed: int) -> None:
    """Report what the handle sees, then put ``n`` stream arrays; each one's description
    goes through ``sums``."""
    q = _attach(q)
    out.put(_what(q))
    rng = np.random.default_rng(seed)
    for i in range(n):
        arr = stream_array(rng)
        q.put(arr, timeout=WAIT)
        sums.put((i, *describe(arr)))


def consume_arrays(q: SharedMemoryQueue | str, out: Any, sums: Any, n: int) -> None:
    """Get ``n`` items and check each against its description from ``sums``; report what the
    handle sees, how many arrived, and every mismatch."""
    q = _attach(q)
    what = _what(q)
    mismatches = []
    for i in range(n):
        item = q.get(timeout=WAIT)
        j, shape, dtype, sha = sums.get(timeout=WAIT)
        if not isinstance(item, np.ndarray):
            mismatches.append((i, f"got {type(item).__name__}"))
            continue
        # its own memory: the array's, or the private bytearray the core copied the item into
        own = item.flags.owndata or type(item.base) is bytearray
        got = (j, item.shape, item.dtype.str, digest(item), own)
        want = (i, shape, dtype, sha, True)
        if got != want or not item.flags.writeable:
            mismatches.append((i, got, want, item.flags.writeable))
    out.put((what, n, mismatches))


def produce_frames(q: SharedMemoryQueue | str, out: Any, sums: Any, n: int, seed: int) -> None:
    """Attach (by name), report what the handle sees, put ``n`` uint8 frames of its shape."""
    q = _attach(q)
    out.put(_what(q))
    assert q.shape is not None and q.dtype is not None
    rng = np.random.default_rng(seed)
    for i in range(n):
        frame = rng.integers(0, 256, size=q.shape, dtype=np.uint8)
        q.put(frame, timeout=WAIT)
        sums.put((i, *describe(frame)))
