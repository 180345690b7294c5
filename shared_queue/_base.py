"""What both backends share: the public put/get methods, item encoding and the bad-input rules.

``QueueBase`` turns items into payloads (pickles, or raw array bytes with their descriptor),
checks them against the queue's limits before anything is sent, and turns payloads back into
items. A backend supplies the transfer: ``_put`` (payloads in, all or none), ``_take`` (1 to n
payloads out) and ``_check_open``; ``_queue.QueueCore`` moves them through shared memory and
``_nats.NatsQueue`` through a NATS JetStream stream.
"""

from __future__ import annotations

import collections
import contextlib
import pickle
from collections.abc import Callable, Iterable
from typing import Any, ClassVar, TypeVar, cast

import numpy as np
import numpy.typing as npt

from . import _layout as L
from ._errors import Empty, Full
from ._serialize import Parts, PickleCodec, RawCodec, payload_size


def _positive_int(what: str, value: Any, limit: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} must be an int, not {type(value).__name__}")
    if not 0 < value <= limit:
        raise ValueError(f"{what} must be between 1 and {limit}, got {value}")
    return value


def _typed_slots(
    label: str, dtype: npt.DTypeLike | None, shape: tuple[int, ...] | int | None
) -> tuple[np.dtype[Any], tuple[int, ...]] | None:
    """Return the checked (dtype, shape) of typed slots, or None for untyped."""
    if dtype is None and shape is None:
        return None
    if dtype is None or shape is None:
        raise ValueError(f"typed queue {label} needs both dtype and shape")
    dt = np.dtype(dtype)
    dims = (shape,) if isinstance(shape, int) else tuple(shape)
    if dt.subdtype is not None:  # ("f4", (2,)) items are float32 arrays with a longer shape
        dt, sub = dt.subdtype
        dims += sub
    if dt.hasobject:
        raise TypeError(f"typed queue {label} cannot hold dtype {dt} (it holds Python objects)")
    if len(dims) > L.MAX_NDIM or not all(isinstance(d, int) and d >= 0 for d in dims):
        raise ValueError(
            f"typed queue {label}: shape {shape!r} must be at most {L.MAX_NDIM} non-negative ints"
        )
    return dt, dims


def _check_timeout(timeout: float | None) -> None:
    """Raise ValueError unless ``timeout`` is None or a non-negative number (not NaN)."""
    if timeout is not None and not timeout >= 0:  # NaN is neither < 0 nor >= 0
        raise ValueError("'timeout' must be a non-negative number")


def _check_mode(
    label: str,
    queue: tuple[bool, np.dtype[Any] | None, tuple[int, ...] | None],
    raw: bool,
    typed: tuple[np.dtype[Any], tuple[int, ...]] | None,
) -> None:
    """Refuse an attach whose ``raw``/``dtype``/``shape`` contradict the queue's own ``queue``
    (its raw flag, dtype and shape)."""
    seg_raw, seg_dtype, seg_shape = queue
    have = "pickle" if not seg_raw else "raw" if seg_dtype is None else "typed"
    if typed is not None and (seg_dtype, seg_shape) != typed:
        want = f"typed ({typed[0]} of shape {typed[1]})"
        if have == "typed":
            have = f"typed ({seg_dtype} of shape {seg_shape})"
        raise ValueError(f"queue {label} is {have}, not {want}")
    if raw and not seg_raw:
        raise ValueError(f"queue {label} is pickle, not raw (attach without raw=True)")


class Items:
    """One queue's items: how they become payloads and back, and the limits they must meet.

    Both backends use one; the shared-memory core (``_core.Ring``) calls its methods for what
    its own fast path (a plain pickle) does not cover.

    Args:
        label: The queue's name, for messages.
        item_size: The largest payload in bytes.
        codec: The queue's codec (pickle or raw).
        batch_limit: The most items one put_batch may hold, and the name of that limit.
    """

    def __init__(
        self,
        label: str,
        item_size: int,
        codec: PickleCodec | RawCodec,
        batch_limit: tuple[int, str],
    ) -> None:
        self.label = label
        self.item_size = item_size
        self.codec = codec
        self.batch_limit = batch_limit
        # Payloads this handle took from the queue but has not returned yet: the items after
        # one that failed to decode in a batch (see decode_failed).
        self.pending: collections.deque[Any] = collections.deque()

    def dumps(
        self, item: Any, tried: tuple[bytes | None, list[Any]] | None = None
    ) -> bytes | Parts:
        """Return the payload of ``item``, checked against item_size; ``tried``: the C
        pickler's try at it (``PickleCodec.finish``), when the caller made one.

        Serializing and checking come before any semaphore or lock is touched, so that a bad
        item never holds a slot.
        """
        codec = self.codec
        if codec.raw:
            data: bytes | Parts = codec.encode(item)  # raises its own TypeError/ValueError
        else:
            try:
                if tried is None:
                    data = codec.encode(item)
                else:
                    data = cast(PickleCodec, codec).finish(item, tried)
            except Exception as exc:
                raise TypeError(
                    f"item of type {type(item).__name__} cannot be pickled for queue "
                    f"{self.label}: {exc}"
                ) from exc
        size = payload_size(data)
        if size > self.item_size:
            raise self.too_large(size)
        return data

    def too_large(self, size: int) -> ValueError:
        """The error for an item of ``size`` bytes that does not fit this queue's items."""
        return ValueError(
            f"item of {size} bytes exceeds item_size={self.item_size} of queue "
            f"{self.label} (create it with a larger item_size)"
        )

    def too_many(self, n: int) -> ValueError:
        """The error for a batch of ``n`` items, more than one put_batch may hold."""
        limit, what = self.batch_limit
        return ValueError(f"batch of {n} items exceeds {what}={limit} of queue {self.label}")

    def payloads(self, items: Iterable[Any]) -> list[bytes | Parts]:
        """Return the payloads of a batch, checked against item_size and the batch limit."""
        payloads = [self.dumps(item) for item in items]
        if len(payloads) > self.batch_limit[0]:
            raise self.too_many(len(payloads))
        return payloads

    def decode(self, payloads: list[Any]) -> list[Any]:
        """Return the items of ``payloads`` (see decode_failed for one that does not decode)."""
        decode = self.codec.decode
        items = []
        for i, payload in enumerate(payloads):
            try:
                items.append(decode(payload))
            except Exception as exc:
                return self.decode_failed(items, payloads, i, exc)
        return items

    def decode_failed(
        self, items: list[Any], payloads: list[Any], i: int, exc: Exception
    ) -> list[Any]:
        """Payload ``i`` did not decode: it is consumed, and those behind it stay with this
        handle for its next gets. Return ``items`` (decoded before it) if there are any, and
        raise for the failed one on the next get; else raise now."""
        self.pending.extendleft(reversed(payloads[i + 1 :]))
        if items:
            self.pending.appendleft(payloads[i])  # raise on the next get, in order
            return items
        if self.codec.raw:
            raise exc  # RawCodec's ValueError names the queue, the item and the fault
        raise pickle.UnpicklingError(
            f"item of {len(payloads[i])} bytes from queue {self.label} could not be "
            f"unpickled: {exc!r}"
        ) from exc

    def from_pending(self, max_items: int) -> list[Any]:
        """Take up to ``max_items`` payloads kept by decode_failed (none if another thread
        took them first)."""
        out: list[Any] = []
        with contextlib.suppress(IndexError):  # another thread emptied it first
            while self.pending and len(out) < max_items:
                out.append(self.pending.popleft())
        return out

    def hooks(self) -> tuple[Callable[..., Any], ...]:
        """What the compiled core calls: (dumps, too_large, too_many, decode, decode_failed)."""
        return self.dumps, self.too_large, self.too_many, self.codec.decode, self.decode_failed


_Q = TypeVar("_Q", bound="QueueBase")


class QueueBase:
    """The API both backends share; see ``SharedMemoryQueue`` for the whole contract."""

    Empty: ClassVar[type[Empty]] = Empty
    Full: ClassVar[type[Full]] = Full

    _name: str
    _run_id: str
    _label: str
    _capacity: int
    _item_size: int
    _items: Items

    # -- what a backend provides ------------------------------------------------------------
    def _check_open(self) -> None:
        """Raise ValueError if this handle is closed."""
        raise NotImplementedError

    def _put(self, payloads: list[bytes | Parts], block: bool, timeout: float | None) -> None:
        """Put all ``payloads`` or none; raise Full if no room came in time."""
        raise NotImplementedError

    def _take(self, max_items: int, block: bool, timeout: float | None) -> list[Any]:
        """Take 1 to ``max_items`` payloads, waiting for the first; raise Empty if none came."""
        raise NotImplementedError

    def close(self) -> None:
        """Release this handle; the queue lives on. Idempotent."""
        raise NotImplementedError

    # -- properties -------------------------------------------------------------------------
    @property
    def _codec(self) -> PickleCodec | RawCodec:
        return self._items.codec

    @property
    def name(self) -> str:
        """The queue's name."""
        return self._name

    @property
    def run_id(self) -> str:
        """The queue's namespace."""
        return self._run_id

    @property
    def capacity(self) -> int:
        """The number of slots."""
        return self._capacity

    @property
    def item_size(self) -> int:
        """The largest serialized item, in bytes, that fits in a slot."""
        return self._item_size

    @property
    def raw(self) -> bool:
        """Whether items travel as raw array bytes rather than pickles."""
        return self._items.codec.raw

    # -- put --------------------------------------------------------------------------------
    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        """Put ``item`` at the tail, waiting for a free slot if ``block``.

        Raises:
            Full: No slot freed up within ``timeout`` (or at once if not ``block``).
            ValueError: The serialized item is larger than item_size, or the handle is closed.
            TypeError: The item cannot be pickled.
        """
        self._put([self._dumps(item)], block, timeout)

    def put_nowait(self, item: Any) -> None:
        """Put ``item`` if a slot is free now; otherwise raise Full."""
        self.put(item, False)

    def put_batch(
        self, items: Iterable[Any], block: bool = True, timeout: float | None = None
    ) -> None:
        """Put all ``items`` in order, or none: wait for room for the whole batch.

        Raises:
            Full: Room for the whole batch did not free up in time; nothing was put.
            ValueError: The batch is larger than the capacity, an item is too large, or the
                handle is closed.
            TypeError: An item cannot be pickled.
        """
        payloads = self._batch_payloads(items)
        if payloads:
            self._put(payloads, block, timeout)

    # -- get --------------------------------------------------------------------------------
    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        """Remove and return the item at the head, waiting for one if ``block``.

        Raises:
            Empty: No item arrived within ``timeout`` (or at once if not ``block``).
            pickle.UnpicklingError: The item could not be unpickled; it was consumed.
            ValueError: The handle is closed.
        """
        payloads = self._take(1, block, timeout)
        return self._decode(payloads)[0]

    def get_nowait(self) -> Any:
        """Remove and return an item if one is there now; otherwise raise Empty."""
        return self.get(False)

    def get_batch(
        self, max_items: int, block: bool = True, timeout: float | None = None
    ) -> list[Any]:
        """Remove and return between 1 and ``max_items`` items, waiting for the first.

        Raises:
            Empty: No item arrived within ``timeout`` (or at once if not ``block``).
            pickle.UnpicklingError: The first item could not be unpickled; it was consumed.
            ValueError: ``max_items`` is not positive, or the handle is closed.
        """
        _positive_int("max_items", max_items, 2**63 - 1)
        return self._decode(self._take(max_items, block, timeout))

    # -- helpers ----------------------------------------------------------------------------
    def __enter__(self: _Q) -> _Q:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _dumps(self, item: Any) -> bytes | Parts:
        return self._items.dumps(item)

    def _too_large(self, size: int) -> ValueError:
        return self._items.too_large(size)

    def _batch_limit(self) -> tuple[int, str]:
        """Return the most items one put_batch may hold, and the name of that limit."""
        return self._items.batch_limit

    def _batch_payloads(self, items: Iterable[Any]) -> list[bytes | Parts]:
        self._check_open()  # a closed handle raises even for an empty batch
        return self._items.payloads(items)

    def _decode(self, payloads: list[Any]) -> list[Any]:
        return self._items.decode(payloads)
