"""SharedMemoryQueue: a named, picklable, crash-tolerant queue in one shared-memory ring.

Every put and get, single, nowait or batch, sync or async, and every view's claim is one call
into the compiled core (``_core.Ring``: put, get, claim), which encodes, takes counts from a
semaphore, locks the side, checks the header counters (the truth), moves the bytes, commits by
advancing ``tail`` (puts) or ``head`` (gets), unlocks, posts the other side's semaphore, sleeps
and tries again as needed, and decodes what it took after the unlock. The protocol, and why a
process killed at any point cannot hang the others or tear an item, is in docs/design.md.
"""

from __future__ import annotations

import contextlib
import math
import os
import weakref
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Final, TypeVar, cast

import numpy as np
import numpy.typing as npt

from . import _core, _metrics, _sync
from . import _layout as L
from ._base import QueueBase, _check_mode, _positive_int, _typed_slots
from ._names import describe
from ._segment import SEM_VALUE_MAX, Segment
from ._serialize import Parts, RawCodec, descriptor

DEFAULT_RECOVERY_INTERVAL = 1.0


_C = TypeVar("_C", bound="QueueCore")


def _reattach(cls: type[_C], name: str, run_id: str, recovery_interval: float) -> _C:
    return cls(name, run_id=run_id, recovery_interval=recovery_interval)


class QueueCore(QueueBase):
    """A FIFO queue of Python objects in shared memory, opened by name from any process.

    The synchronous queue; ``shared_queue.SharedMemoryQueue`` adds the asyncio methods.

    Args:
        name: The queue's name; processes that use the same name and run_id share it.
        create: Create the queue (FileExistsError if it exists); otherwise attach to it and
            read capacity and item_size from it (FileNotFoundError if it does not exist).
        capacity: Number of slots, used only when creating.
        item_size: Largest serialized item in bytes, used only when creating.
        run_id: Namespace for the name, so runs of one program do not collide.
        lock: Accepted for compatibility with the original API and ignored.
        recovery_interval: How often a blocked operation re-checks the queue so that a
            process killed mid-operation cannot stall it for longer (seconds).
        raw: Create a raw queue: items are numpy arrays or bytes-like objects, copied with a
            small descriptor and never pickled (see docs/raw-mode.md).
        dtype: With ``shape``, create a typed raw queue whose every item is an array of
            this dtype and shape; item_size is derived from them.
        shape: The shape of a typed raw queue's items (see ``dtype``).
        spare_slots: Slots beyond ``capacity`` for zero-copy views to hold, used only when
            creating; default 2 for raw queues, 0 otherwise (see docs/raw-mode.md).

    Raises:
        TypeError: A name, capacity or item_size of the wrong type.
        ValueError: A bad name, capacity, item_size or spare_slots out of range, or (when
            attaching) ``raw``, ``dtype`` or ``shape`` that contradict the queue's.
        FileExistsError: ``create=True`` and the queue exists.
        FileNotFoundError: ``create=False`` and the queue does not exist.
        IncompatibleQueueError: The name refers to a segment this version cannot read.
    """

    def __init__(
        self,
        name: str,
        create: bool = False,
        capacity: int = 1000,
        item_size: int = 4096,
        run_id: str = "",
        lock: Any = None,
        *,
        recovery_interval: float = DEFAULT_RECOVERY_INTERVAL,
        raw: bool = False,
        dtype: npt.DTypeLike | None = None,
        shape: tuple[int, ...] | int | None = None,
        spare_slots: int | None = None,
    ) -> None:
        if not 0 < recovery_interval <= 3600:  # NaN and inf fail too
            raise ValueError(
                f"recovery_interval must be positive and at most 3600 seconds, got "
                f"{recovery_interval}"
            )
        self._name = name
        self._run_id = run_id
        self._recovery_interval = float(recovery_interval)
        self._label = describe(name, run_id)
        typed = _typed_slots(self._label, dtype, shape)
        if create:
            _positive_int("capacity", capacity, SEM_VALUE_MAX)
            if typed is not None:
                item_size = len(descriptor(*typed)) + typed[0].itemsize * math.prod(typed[1])
            raw = raw or typed is not None
            _positive_int("item_size", item_size, L.MAX_ITEM_SIZE)
            if spare_slots is None:
                spare_slots = L.default_spare_slots(raw)
            elif spare_slots != 0:
                _positive_int("spare_slots", spare_slots, SEM_VALUE_MAX - capacity)
            seg = Segment.create(name, run_id, capacity, item_size, raw, typed, spare_slots,
                                 self._recovery_interval)  # fmt: skip
        else:
            seg = Segment.attach(name, run_id, self._recovery_interval)
            try:
                _check_mode(self._label, (seg.raw, seg.dtype, seg.shape), raw, typed)
            except BaseException:
                seg.close()
                raise
        self._seg: Segment | None = seg
        self._ring = seg.ring  # raises ValueError naming the queue once the handle is closed
        self._items = seg.items
        self._capacity = seg.capacity
        self._item_size = seg.item_size

    # -- properties -------------------------------------------------------------------------
    @property
    def dtype(self) -> np.dtype[Any] | None:
        """The dtype of every item of a typed raw queue, else None."""
        seg = self._segment()
        return seg.dtype

    @property
    def shape(self) -> tuple[int, ...] | None:
        """The shape of every item of a typed raw queue, else None."""
        seg = self._segment()
        return seg.shape

    @property
    def closed(self) -> bool:
        """Whether this handle was closed."""
        return self._seg is None

    # -- zero-copy views (raw queues) -------------------------------------------------------
    @contextlib.contextmanager
    def get_view(
        self, block: bool = True, timeout: float | None = None
    ) -> Iterator[np.ndarray[Any, Any]]:
        """Take the item at the head and yield a read-only array that views its slot.

        The item leaves the queue at once, as with ``get``, and its ring entry is free for
        the next put. Its slot goes back to the pool when the array and every array derived
        from it are gone: an array kept past the with-block keeps its slot, so it never shows
        another item's data, and holds nothing else back. Up to ``spare_slots`` arrays (of
        all processes) may be kept at once without taking room from queued items.

        Raises:
            Empty: No item arrived within ``timeout`` (or at once if not ``block``).
            TypeError: The queue is not raw.
            ValueError: The item's descriptor is corrupt (the item is consumed).
        """
        seg = self._raw_segment("get_view")
        off, size = self._ring.claim(False, owner_id(), block, timeout)
        codec = cast(RawCodec, self._items.codec)
        seg.view_opened()
        try:
            arr = codec.view(seg.buf, off + L.BLOB_OFFSET, size)
        except BaseException:
            _release_view(seg, off, False, os.getpid())
            raise
        weakref.finalize(arr, _release_view, seg, off, False, os.getpid())
        yield arr

    @contextlib.contextmanager
    def put_view(
        self,
        shape: tuple[int, ...] | int | None = None,
        dtype: npt.DTypeLike | None = None,
        block: bool = True,
        timeout: float | None = None,
    ) -> Iterator[np.ndarray[Any, Any]]:
        """Yield a writable array in a free slot; it is put when the with-block exits.

        ``shape`` and ``dtype`` default to a typed queue's. The slot's ring entry is reserved
        from the start, so the exit never waits; items are queued in the order their blocks
        exit. If the block raises, the item is discarded and its ring entry given back. After
        the block the array is read-only, and its slot is not reused while the array (or one
        derived from it) lives; arrays derived from it inside the block stay writable, so do
        not keep those.

        Raises:
            Full: No slot freed up within ``timeout`` (or at once if not ``block``).
            TypeError: The queue is not raw.
            ValueError: Shape or dtype missing, not the typed queue's, or too large.
        """
        seg = self._raw_segment("put_view")
        typed = _typed_slots(self._label, seg.dtype if dtype is None else dtype,
                             seg.shape if shape is None else shape)  # fmt: skip
        if typed is None:
            raise ValueError(f"put_view on untyped queue {self._label} needs shape and dtype")
        dt, dims = typed
        if seg.dtype is not None and (dt != seg.dtype or dims != seg.shape):
            raise ValueError(
                f"put_view of {dt} with shape {dims} does not match typed queue {self._label} "
                f"({seg.dtype} of shape {seg.shape})"
            )
        desc = descriptor(dt, dims)
        size = len(desc) + dt.itemsize * math.prod(dims)
        if size > self._item_size:
            raise self._too_large(size)
        off = self._ring.claim(True, owner_id(), block, timeout)
        blob = off + L.BLOB_OFFSET
        seg.view_opened()  # from the claim: close() keeps the mapping while the array lives
        try:
            arr: np.ndarray[Any, Any] = np.ndarray(
                dims, dt, buffer=seg.buf, offset=blob + len(desc)
            )
        except BaseException:
            seg.ring.publish(off, size, False, owner_id())
            _release_view(seg, off, True, os.getpid())
            raise
        weakref.finalize(arr, _release_view, seg, off, True, os.getpid())
        ok = False
        try:
            yield arr
            ok = True
        finally:
            arr.flags.writeable = False
            if ok:
                seg.buf[blob : blob + len(desc)] = desc
            seg.ring.publish(off, size, ok, owner_id())

    def _raw_segment(self, what: str) -> Segment:
        seg = self._segment()
        if not seg.raw:
            raise TypeError(
                f"{what} needs a raw queue; queue {self._label} pickles its items "
                "(create it with raw=True or dtype= and shape=)"
            )
        return seg

    # -- state ------------------------------------------------------------------------------
    def qsize(self) -> int:
        """Return the number of items a get can take (approximate while others operate)."""
        return _metrics.queue_size(self._segment().fields)

    def empty(self) -> bool:
        """Return whether a get_nowait would find no item (approximate while others operate)."""
        return self.qsize() == 0

    def full(self) -> bool:
        """Return whether a put_nowait would find no room (approximate while others operate).

        No room: the ring holds ``capacity`` items (open put_views count), or the pool has no
        free slot because more views are held than there are spare slots.
        """
        return bool(self._segment().ring.full())

    def get_metrics(self) -> dict[str, Any]:
        """Return a snapshot of the queue's size and cumulative counters.

        Keys: queue_size, queue_capacity, queue_utilization_percent, queue_item_size_bytes
        (as in the original API), spare_slots, and total_puts, total_gets, bytes_in,
        bytes_out, high_water_mark, put_waits, put_wait_seconds, get_waits, get_wait_seconds
        (docs/cli.md#the-record says what each means; ``stat --json`` prints the same).
        """
        return _metrics.record(self._segment().fields)

    # -- lifecycle --------------------------------------------------------------------------
    def close(self) -> None:
        """Release this handle's mapping and descriptors; the queue lives on. Idempotent.

        Coroutines waiting in this handle's async methods raise ValueError.
        """
        seg, self._seg = self._seg, None
        if seg is not None:
            seg.close(close_semaphores=self._stop_waiting())

    def _stop_waiting(self) -> bool:
        """Stop what waits on this handle's semaphores besides its own calls.

        Returns whether the semaphores may be closed now. The core has nothing of the kind;
        the asyncio layer (``_async.py``) overrides this for its waiter threads.
        """
        return True

    def unlink(self) -> None:
        """Remove the queue's name and semaphores from the system, once across all handles.

        Handles that are open keep working until closed; new handles cannot attach.

        Raises:
            FileNotFoundError: The queue was already unlinked.
        """
        seg = self._seg
        if seg is None:
            seg = Segment.attach(self._name, self._run_id)
            try:
                seg.unlink()
            finally:
                seg.close()
        else:
            seg.unlink()

    def __reduce__(self) -> tuple[Callable[..., QueueCore], tuple[Any, ...]]:
        return _reattach, (type(self), self._name, self._run_id, self._recovery_interval)

    def __repr__(self) -> str:
        state = ", closed" if self._seg is None else ""
        return (
            f"{type(self).__name__}(name={self._name!r}, run_id={self._run_id!r}, "
            f"capacity={self._capacity}, item_size={self._item_size}{state})"
        )

    def __del__(self) -> None:
        # Only the mapping and descriptors; the queue itself is removed by unlink().
        seg = getattr(self, "_seg", None)
        if seg is not None:
            seg.close()

    # -- core -------------------------------------------------------------------------------
    def _check_open(self) -> None:
        self._segment()

    def _segment(self) -> Segment:
        seg = self._seg
        if seg is None:
            raise ValueError(f"queue {self._label}: this handle is closed")
        return seg

    # -- put and get: one call into the core each ------------------------------------------
    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        self._ring.put(item, 0, block, timeout, 0)

    def put_nowait(self, item: Any) -> None:
        self._ring.put(item, 0, False, None, 0)

    def put_batch(
        self, items: Iterable[Any], block: bool = True, timeout: float | None = None
    ) -> None:
        if items.__class__ is not list:
            self._check_open()  # before the iterable is consumed
            items = list(items)
        self._ring.put(items, _BATCH, block, timeout, 0)

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        if self._items.pending:  # rare: after an item that failed to decode in a batch
            items = self._held(1)
            if items:
                return items[0]
        return self._ring.get(1, _ITEM, block, timeout, 0)

    def get_nowait(self) -> Any:
        return self.get(False)

    def get_batch(
        self, max_items: int, block: bool = True, timeout: float | None = None
    ) -> list[Any]:
        _positive_int("max_items", max_items, 2**63 - 1)
        if self._items.pending:
            items = self._held(max_items)
            if items:
                return items
        return self._ring.get(max_items, _ITEMS, block, timeout, 0)  # type: ignore[no-any-return]

    put.__doc__ = QueueBase.put.__doc__
    put_nowait.__doc__ = QueueBase.put_nowait.__doc__
    put_batch.__doc__ = QueueBase.put_batch.__doc__
    get.__doc__ = QueueBase.get.__doc__
    get_nowait.__doc__ = QueueBase.get_nowait.__doc__
    get_batch.__doc__ = QueueBase.get_batch.__doc__

    def _held(self, max_items: int) -> list[Any]:
        """Up to ``max_items`` items this handle holds, left by a batch whose item failed to
        decode (``Items.decode_failed``); [] if another thread took them first."""
        self._check_open()
        return self._items.decode(self._items.from_pending(max_items))

    def _put(self, payloads: list[bytes | Parts], block: bool, timeout: float | None) -> None:
        self._ring.put(payloads, _BATCH | _ENCODED, block, timeout, 0)

    def _take(self, max_items: int, block: bool, timeout: float | None) -> list[Any]:
        self._check_open()
        pending = self._items.from_pending(max_items)
        if pending:
            return pending
        return self._ring.get(max_items, _PAYLOADS, block, timeout, 0)  # type: ignore[no-any-return]


# Ring.put's flags: a list of items (or payloads), payloads already encoded and checked, the
# caller waits after a non-blocking try (the async path).
_BATCH: Final = _core.PUT_BATCH
_ENCODED: Final = _core.PUT_ENCODED
_WILL_WAIT: Final = _core.PUT_WILL_WAIT
# Ring.get's forms of what it took: a list of items, the one item, the payloads undecoded.
_ITEMS: Final = _core.GET_ITEMS
_ITEM: Final = _core.GET_ITEM
_PAYLOADS: Final = _core.GET_PAYLOADS

_owner = [0, -1]  # [owner id, pid it was computed in]


def owner_id() -> int:
    """Return this process's id in slot records: pid | (start time & 0xffffffff) << 32."""
    pid = os.getpid()
    if _owner[1] != pid:
        _owner[0] = pid | ((_sync.process_start_time(pid) or 0) & 0xFFFF_FFFF) << 32
        _owner[1] = pid
    return _owner[0]


def _release_view(seg: Segment, off: int, pin: bool, pid: int) -> None:
    """Finalizer of a view's array: give its slot back to the pool."""
    if os.getpid() != pid:
        return  # a forked child's copy of the array: the parent still holds the slot
    try:
        seg.ring.release(off, pin, owner_id())
    finally:
        seg.view_closed()
