"""The shared-memory segment layout: numpy dtypes for the header, the ring and the slots.

One segment per queue, in ``/dev/shm``::

    offset 0      +---------------------------------------------------------------+
                  | header record (HEADER_DTYPE, 4096 bytes, one page)            |
                  |   0  magic u8        8 version u4   12 flags u4               |
                  |  16  capacity u8    24 item_size u8  32 slot_size u8          |
                  |  40  slots_offset u8 48 nonce u8     56 creator_pid i8        |
                  |  64  creator_start u8  72 created_ns u8                       |
                  |  80  spare_slots u8  88 ring_offset u8  96 lock_kind u8       |
                  | 128  producer line: tail, reserved, allocs, cursor, puts,     |
                  |      bytes_in, high_water, room_wait_until, put_waits,        |
                  |      put_wait_ns                    (u8 each, two cache lines)|
                  | 256  consumer line: head, gets, bytes_out, get_waits,         |
                  |      get_wait_ns, releases, sweep             (u8 each)       |
                  | 384  name S128      512 run_id S128                           |
                  | 640  dtype S1024   1664 ndim u8   1672 shape u8[32] (typed raw)|
                  | 2048 producer_mutex V64   2112 consumer_mutex V64             |
    ring_offset   +---------------------------------------------------------------+
    (4096)        | ring: capacity x u4 slot index (RING_DTYPE), padded to 64     |
    slots_offset  +---------------------------------------------------------------+
                  | slot 0: length u4, state u4, owner u8, pin u8, pad to 64;     |
                  |         blob: item_size bytes, rounded up to 64               |
                  |         (slot_size = 64 + round64(item_size))                 |
                  | ...                                                           |
                  | slot capacity + spare_slots - 1                               |
                  +---------------------------------------------------------------+

The queue is a ring of slot *indices*; the slots are a pool of ``capacity + spare_slots``.
Item ``k`` (two counters, monotonically increasing and never wrapped: ``head <= k < tail``)
lives in the slot whose index is ``ring[k % capacity]``. A put takes a FREE slot from the pool,
fills it and appends its index; a get copies it out and frees it at once. A zero-copy view
(``get_view`` / a published ``put_view`` array) holds its slot outside the ring, so it never
takes the room of a queued item, and spare slots keep the pool from running dry while views
are held (see docs/design.md#views-and-spare-slots).

- ``tail``: items appended; ``head``: items taken. ``tail - head`` is the queue's size.
- ``reserved``: ring entries promised to open ``put_view`` blocks (``tail + reserved - head
  <= capacity``); ``allocs`` / ``releases``: slots taken from / given back to the pool, so
  ``capacity + spare_slots - (allocs - releases)`` slots are FREE; ``cursor``: where the next
  search for a FREE slot starts.
- ``sweep``: set (by anyone) when a view released its slot without the consumer lock; the next
  consumer frees such slots.
- ``room_wait_until`` (CLOCK_MONOTONIC ns): set by a ``put_batch`` that sleeps for room; until
  then every get posts one extra wake-up, so that a single put waiting behind the batch is not
  left asleep beside a free slot.

The producer fields are written only under the producer lock, the consumer fields only under
the consumer lock (``sweep`` aside, which anyone may set to 1), so each side owns its cache
lines. Blobs start 64-byte aligned. Hot paths read and write through cached
``memoryview.cast("Q")``/``cast("I")`` views; the integer indexes they use (``IDX`` and the
slot field offsets below) are derived here from the dtypes so the layout is defined once.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import numpy as np

MAGIC: Final = 0x3151_4D48_5351_5351  # b"QSQSHMQ1" read as little-endian u8
VERSION: Final = 2
HEADER_SIZE: Final = 4096
ALIGN: Final = 64
NAME_FIELD: Final = 128  # bytes stored for the name and the run_id (display only)
DTYPE_FIELD: Final = 1024  # bytes for a typed queue's dtype, as text
MAX_NDIM: Final = 32
MAX_ITEM_SIZE: Final = 2**31 - 1 - 2 * ALIGN  # numpy's largest void field, less the slot head
FLAG_RAW: Final = 1  # items are arrays or bytes, not pickles
FLAG_TYPED: Final = 2  # every item is an array of the header's dtype and shape
# lock_kind: what the two mutexes are. Only ROBUST is made for users; UNSAFE (no owner-death
# recovery) exists for the benchmark's crash-safety baseline.
LOCK_ROBUST: Final = 1  # PTHREAD_PROCESS_SHARED + PTHREAD_MUTEX_ROBUST (glibc layout)
LOCK_UNSAFE: Final = 2  # PTHREAD_PROCESS_SHARED only
MUTEX_FIELD: Final = 64  # bytes set aside for one pthread_mutex_t

# (name, format, offset) of each header field; the drawing above shows the same.
_HEADER_FIELDS: Final = [
    ("magic", "<u8", 0),
    ("version", "<u4", 8),
    ("flags", "<u4", 12),
    ("capacity", "<u8", 16),
    ("item_size", "<u8", 24),
    ("slot_size", "<u8", 32),
    ("slots_offset", "<u8", 40),
    ("nonce", "<u8", 48),
    ("creator_pid", "<i8", 56),
    ("creator_start", "<u8", 64),
    ("created_ns", "<u8", 72),
    ("spare_slots", "<u8", 80),
    ("ring_offset", "<u8", 88),
    ("lock_kind", "<u8", 96),
    # producer lines
    ("tail", "<u8", 128),
    ("reserved", "<u8", 136),
    ("allocs", "<u8", 144),
    ("cursor", "<u8", 152),
    ("puts", "<u8", 160),
    ("bytes_in", "<u8", 168),
    ("high_water", "<u8", 176),
    ("room_wait_until", "<u8", 184),
    ("put_waits", "<u8", 192),
    ("put_wait_ns", "<u8", 200),
    # consumer line
    ("head", "<u8", 256),
    ("gets", "<u8", 264),
    ("bytes_out", "<u8", 272),
    ("get_waits", "<u8", 280),
    ("get_wait_ns", "<u8", 288),
    ("releases", "<u8", 296),
    ("sweep", "<u8", 304),
    # display only
    ("name", f"S{NAME_FIELD}", 384),
    ("run_id", f"S{NAME_FIELD}", 384 + NAME_FIELD),
    # typed raw slots (flags & TYPED): the dtype as text, and the shape
    ("dtype", f"S{DTYPE_FIELD}", 640),
    ("ndim", "<u8", 640 + DTYPE_FIELD),
    ("shape", f"({MAX_NDIM},)<u8", 648 + DTYPE_FIELD),
    # the two locks: process-shared pthread mutexes, one cache line each
    ("producer_mutex", "V64", 2048),
    ("consumer_mutex", "V64", 2112),
]
HEADER_DTYPE: Final = np.dtype(
    {
        "names": [f[0] for f in _HEADER_FIELDS],
        "formats": [f[1] for f in _HEADER_FIELDS],
        "offsets": [f[2] for f in _HEADER_FIELDS],
        "itemsize": HEADER_SIZE,
    }
)

# Index of each 8-byte header field in a memoryview of the header cast to "Q".
_FIELDS: Final[Mapping[str, tuple[Any, ...]]] = HEADER_DTYPE.fields or {}
IDX: Final = {name: off // 8 for name, (dt, off, *_) in _FIELDS.items() if dt.itemsize == 8}

RING_DTYPE: Final = np.dtype("<u4")  # one ring entry: the index of a pool slot

# Slot states (the ``state`` field). A fresh segment is zero-filled: every slot FREE.
FREE: Final = 0  # in the pool, takeable by a put
WRITING: Final = 1  # claimed by an open put_view (``owner``)
READY: Final = 2  # holds an item (in the ring, or being appended under the producer lock)
READING: Final = 3  # taken by a get_view whose array lives (``owner``)
DONE: Final = 4  # consumed, but an array still views it (``pin``, or a released view's)


def round_up(n: int, to: int = ALIGN) -> int:
    """Return ``n`` rounded up to a multiple of ``to``."""
    return -(-n // to) * to


_SLOT_HEAD: Final = ALIGN  # the slot record's fields, padded to one cache line


def slot_dtype(item_size: int) -> np.dtype[np.void]:
    """Return the dtype of one slot record for blobs of ``item_size`` bytes."""
    return np.dtype(
        {
            "names": ["length", "state", "owner", "pin", "blob"],
            "formats": ["<u4", "<u4", "<u8", "<u8", ("u1", (round_up(item_size),))],
            "offsets": [0, 4, 8, 16, _SLOT_HEAD],
            "itemsize": _SLOT_HEAD + round_up(item_size),
        }
    )


# Byte offsets of the slot fields, from the dtype. ``length`` and ``state`` share the slot's
# first 8-byte word (length low, state high), stored in one write so that a reader never sees
# a new state with an old length.
_SLOT_FIELDS: Final[Mapping[str, tuple[Any, ...]]] = slot_dtype(ALIGN).fields or {}
LENGTH_OFFSET: Final[int] = _SLOT_FIELDS["length"][1]
STATE_OFFSET: Final[int] = _SLOT_FIELDS["state"][1]
OWNER_OFFSET: Final[int] = _SLOT_FIELDS["owner"][1]
PIN_OFFSET: Final[int] = _SLOT_FIELDS["pin"][1]
BLOB_OFFSET: Final[int] = _SLOT_FIELDS["blob"][1]
if (LENGTH_OFFSET, STATE_OFFSET) != (0, 4):  # pragma: no cover - a layout edit broke the word
    raise ImportError("slot length and state must share the slot's first 8-byte word")


def default_spare_slots(raw: bool) -> int:
    """Return the spare slots a queue gets unless told: 2 for raw queues (views), else 0."""
    return 2 if raw else 0


def geometry(capacity: int, item_size: int, spare_slots: int) -> dict[str, int]:
    """Return the derived header fields and the byte size of a segment of these parameters."""
    ring_offset = HEADER_SIZE
    slots_offset = round_up(ring_offset + capacity * RING_DTYPE.itemsize)
    slot_size = slot_dtype(item_size).itemsize
    return {
        "ring_offset": ring_offset,
        "slots_offset": slots_offset,
        "slot_size": slot_size,
        "size": slots_offset + (capacity + spare_slots) * slot_size,
    }


def segment_size(capacity: int, item_size: int, spare_slots: int = 0) -> int:
    """Return the byte size of a segment for ``capacity`` items of ``item_size`` bytes."""
    return geometry(capacity, item_size, spare_slots)["size"]


def geometry_error(header: Mapping[str, int], file_size: int) -> str | None:
    """Return what is wrong with a header's sizes and offsets for a file of ``file_size``.

    None if capacity, item_size and spare_slots are in range and every derived field, and the
    file's size, are what ``geometry`` makes of them: a segment whose fields disagree would
    give overlapping slots.
    """
    capacity, item_size, spare = header["capacity"], header["item_size"], header["spare_slots"]
    if not (0 < capacity < 2**31 and 0 < item_size <= MAX_ITEM_SIZE and 0 <= spare < 2**31):
        return f"capacity={capacity}, item_size={item_size}, spare_slots={spare} out of range"
    if capacity + spare >= 2**32:
        return f"capacity + spare_slots = {capacity + spare} does not fit a ring entry"
    want = geometry(capacity, item_size, spare)
    for field in ("ring_offset", "slots_offset", "slot_size"):
        if header[field] != want[field]:
            return (
                f"{field}={header[field]} (capacity={capacity}, item_size={item_size}, "
                f"spare_slots={spare} make it {want[field]})"
            )
    if file_size != want["size"]:
        return f"file size {file_size} (the header's fields make it {want['size']})"
    return None


def core_layout(capacity: int, spare_slots: int, item_size: int) -> dict[str, int]:
    """Return what the compiled core (shared_queue._core.Ring) needs to know of the layout.

    The header fields as ``header.<name>`` (byte offsets), the geometry (``capacity``,
    ``pool``, ``slot_size``, ``slots_offset``, ``ring_offset``), the slot fields as
    ``slot.<name>`` (byte offsets inside a slot record) and the slot states, all taken from
    the dtypes and constants above: the core writes none of them down itself.
    """
    out = {f"header.{name}": off for name, (dt, off, *_) in _FIELDS.items()}
    out.update(geometry(capacity, item_size, spare_slots))
    out.update(capacity=capacity, item_size=item_size, pool=capacity + spare_slots)
    out.update({f"slot.{name}": off for name, (dt, off, *_) in _SLOT_FIELDS.items()})
    out.update(FREE=FREE, WRITING=WRITING, READY=READY, READING=READING, DONE=DONE)
    return out
