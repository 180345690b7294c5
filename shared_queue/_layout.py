"""The shared-memory segment layout: numpy dtypes for the header and the slots.

One segment per queue, in ``/dev/shm``::

    offset 0      +---------------------------------------------------------------+
                  | header record (HEADER_DTYPE, 4096 bytes, one page)            |
                  |   0  magic u8        8 version u4   12 flags u4               |
                  |  16  capacity u8    24 item_size u8  32 slot_size u8          |
                  |  40  slots_offset u8 48 nonce u8     56 creator_pid i8        |
                  |  64  creator_start u8  72 created_ns u8                       |
                  | 128  producer line: tail, puts, bytes_in, put_waits,          |
                  |      put_wait_ns, high_water, batch_wait_until, committed     |
                  |      (u8 each)                                                |
                  | 192  consumer line: head, gets, bytes_out, get_waits,         |
                  |      get_wait_ns, freed               (u8 each, one cache line)|
                  | 256  name S128      384 run_id S128                           |
                  | 512  dtype S1024   1536 ndim u8   1544 shape u8[32] (typed raw)|
    offset 4096   +---------------------------------------------------------------+
                  | slot 0: length u4, state u4, owner u8, pin u8, pad to 64;     |
                  |         blob: item_size bytes, rounded up to 64               |
                  |         (slot_size = 64 + round64(item_size))                 |
                  | slot 1 ...                                                    |
                  | slot capacity-1                                               |
                  +---------------------------------------------------------------+

Four counters, monotonically increasing and never wrapped, walk the ring; item ``k`` lives in
slot ``k % capacity``, and ``freed <= head <= committed <= tail``:

- ``tail``: slots producers have claimed; ``committed``: the prefix of them that is published
  (visible to consumers). They differ only while a ``put_view`` is open.
- ``head``: items consumers have claimed; ``freed``: the prefix of them whose slots are back in
  the ring. They differ only while a ``get_view`` (or a published ``put_view``) array lives.

A slot's ``state`` says where it is between those counters (READY, WRITING, SKIP, READING,
DONE; see ``_ring``), ``owner`` which process holds it in WRITING or READING, and ``pin`` which
process still holds a ``put_view`` array of it.

The producer fields are written only under the producer lock, the consumer fields only under
the consumer lock, so each side owns its cache line. ``batch_wait_until`` (CLOCK_MONOTONIC ns)
is set by a ``put_batch`` that sleeps for room; until then every get posts one extra wake-up,
so that a single put waiting behind the batch is not left asleep beside a free slot. Blobs
start 64-byte aligned.

Hot paths read and write the header through a cached ``memoryview.cast("Q")``; the integer
indexes they use (``IDX``) are derived here from the dtype so the layout is defined once.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import numpy as np

MAGIC: Final = 0x3151_4D48_5351_5351  # b"QSQSHMQ1" read as little-endian u8
VERSION: Final = 1
HEADER_SIZE: Final = 4096
BLOB_OFFSET: Final = 64  # blob offset inside a slot record
ALIGN: Final = 64
NAME_FIELD: Final = 128  # bytes stored for the name and the run_id (display only)
DTYPE_FIELD: Final = 1024  # bytes for a typed queue's dtype, as text
MAX_NDIM: Final = 32
FLAG_RAW: Final = 1  # items are arrays or bytes, not pickles
FLAG_TYPED: Final = 2  # every item is an array of the header's dtype and shape

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
    # producer line
    ("tail", "<u8", 128),
    ("puts", "<u8", 136),
    ("bytes_in", "<u8", 144),
    ("put_waits", "<u8", 152),
    ("put_wait_ns", "<u8", 160),
    ("high_water", "<u8", 168),
    ("batch_wait_until", "<u8", 176),
    ("committed", "<u8", 184),
    # consumer line
    ("head", "<u8", 192),
    ("gets", "<u8", 200),
    ("bytes_out", "<u8", 208),
    ("get_waits", "<u8", 216),
    ("get_wait_ns", "<u8", 224),
    ("freed", "<u8", 232),
    # display only
    ("name", f"S{NAME_FIELD}", 256),
    ("run_id", f"S{NAME_FIELD}", 256 + NAME_FIELD),
    # typed raw slots (flags & TYPED): the dtype as text, and the shape
    ("dtype", f"S{DTYPE_FIELD}", 512),
    ("ndim", "<u8", 512 + DTYPE_FIELD),
    ("shape", f"({MAX_NDIM},)<u8", 520 + DTYPE_FIELD),
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


def round_up(n: int, to: int = ALIGN) -> int:
    """Return ``n`` rounded up to a multiple of ``to``."""
    return -(-n // to) * to


def slot_dtype(item_size: int) -> np.dtype[np.void]:
    """Return the dtype of one slot record for blobs of ``item_size`` bytes."""
    return np.dtype(
        {
            "names": ["length", "state", "owner", "pin", "blob"],
            "formats": ["<u4", "<u4", "<u8", "<u8", ("u1", (round_up(item_size),))],
            "offsets": [0, 4, 8, 16, BLOB_OFFSET],
            "itemsize": BLOB_OFFSET + round_up(item_size),
        }
    )


def segment_size(capacity: int, item_size: int) -> int:
    """Return the byte size of a segment for ``capacity`` slots of ``item_size`` bytes."""
    return HEADER_SIZE + capacity * slot_dtype(item_size).itemsize
