"""The ring: what puts, gets and views do to the header counters and slot states.

Every function here runs under the lock of the side whose counters it moves (producer lock:
``tail``, ``committed``; consumer lock: ``head``, ``freed``), except ``release``, which only
stores into a slot the caller holds. A slot's 8-byte first word is ``length | state << 32``,
stored in one write, so a reader never sees a new state with an old length.

Slot states between the counters::

    [freed, head)       READING (a get_view holds it)  DONE (copied out or released)
    [head, committed)   READY (an item)                SKIP (a discarded put_view)
    [committed, tail)   WRITING (a put_view fills it)  READY/SKIP behind a WRITING slot

``committed`` advances over READY and SKIP slots, ``freed`` over DONE slots without a pin. A
WRITING or READING slot whose owner died, or a pin whose owner died, is recovered when a
blocked operation re-checks after ``recovery_interval`` (``recover=True``).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Final

from . import _layout as L
from ._sync import process_start_time

if TYPE_CHECKING:
    from ._segment import Segment

READY: Final = 1
WRITING: Final = 2
SKIP: Final = 3
READING: Final = 4
DONE: Final = 5

_TAIL, _COMMITTED = L.IDX["tail"], L.IDX["committed"]
_HEAD, _FREED = L.IDX["head"], L.IDX["freed"]
_PUTS, _BYTES_IN, _HIGH = L.IDX["puts"], L.IDX["bytes_in"], L.IDX["high_water"]
_PUT_WAITS, _PUT_WAIT_NS = L.IDX["put_waits"], L.IDX["put_wait_ns"]
_GETS, _BYTES_OUT = L.IDX["gets"], L.IDX["bytes_out"]
_GET_WAITS, _GET_WAIT_NS = L.IDX["get_waits"], L.IDX["get_wait_ns"]
_BLOB: Final = L.BLOB_OFFSET
_LOW32: Final = 0xFFFF_FFFF

_owner = [0, -1]  # [owner id, pid it was computed in]


def owner_id() -> int:
    """Return this process's id in slot records: pid | (start time & 0xffffffff) << 32."""
    pid = os.getpid()
    if _owner[1] != pid:
        _owner[0] = pid | ((process_start_time(pid) or 0) & _LOW32) << 32
        _owner[1] = pid
    return _owner[0]


def owner_alive(owner: int) -> bool:
    """Return whether the process recorded as ``owner`` still runs (pid reuse included)."""
    start = process_start_time(owner & _LOW32)
    return start is not None and (start & _LOW32) == owner >> 32


def _slot(seg: Segment, k: int) -> int:
    """Return the byte offset of the slot record that holds item ``k``."""
    return seg.slots_offset + (k % seg.capacity) * seg.slot_size


def _state(seg: Segment, k: int) -> int:
    state: int = seg.u32[(_slot(seg, k) >> 2) + 1]
    return state


# -- commits (the copy paths: put, put_batch, get, get_batch) -------------------------------
def commit_put(seg: Segment, payloads: list[Any], n: int, waited_ns: int) -> tuple[int, int, int]:
    """Write ``n`` payloads at the tail if they fit: (moved, items now visible, room seen)."""
    hdr = seg.hdr
    cap = seg.capacity
    tail: int = hdr[_TAIL]
    used: int = tail - hdr[_FREED]
    if cap - used < n:
        return 0, 0, cap - used
    u64, buf, slot_size, base = seg.u64, seg.buf, seg.slot_size, seg.blob_base
    nbytes = 0
    for i, data in enumerate(payloads):
        off = base + ((tail + i) % cap) * slot_size
        if type(data) is bytes:
            size = len(data)
            buf[off : off + size] = data
        else:
            size = 0
            for part in data:  # parts are bytes or 1-d byte memoryviews
                n_part = len(part)
                buf[off + size : off + size + n_part] = part
                size += n_part
        u64[(off - _BLOB) >> 3] = size | READY << 32
        nbytes += size
    hdr[_TAIL] = tail + n
    if hdr[_COMMITTED] == tail:
        hdr[_COMMITTED] = tail + n  # commit point: the items are visible from here on
        visible = n
    else:  # an open put_view is ahead of these items: they become visible after it
        visible = advance_committed(seg)
    hdr[_PUTS] += n
    hdr[_BYTES_IN] += nbytes
    if used + n > hdr[_HIGH]:
        hdr[_HIGH] = used + n
    if waited_ns:
        hdr[_PUT_WAITS] += 1
        hdr[_PUT_WAIT_NS] += waited_ns
    return n, visible, cap - used - n


def commit_get(seg: Segment, out: list[Any], limit: int, waited_ns: int) -> tuple[int, int, int]:
    """Copy up to ``limit`` items from the head into ``out``: (items, slots freed, items seen)."""
    hdr = seg.hdr
    head: int = hdr[_HEAD]
    avail: int = hdr[_COMMITTED] - head
    if avail < 1:
        return 0, 0, 0
    u64, buf, slot_size, cap, base = seg.u64, seg.buf, seg.slot_size, seg.capacity, seg.blob_base
    extract = seg.extract
    simple = hdr[_FREED] == head
    nbytes = 0
    got = 0
    k = 0  # slots taken: the items, and the discarded put_views among them
    while k < avail and got < limit:
        off = base + ((head + k) % cap) * slot_size
        k += 1
        if u64[((off - _BLOB) >> 3) + 2]:  # pinned by a put_view array: not free yet
            simple = False
        word: int = u64[(off - _BLOB) >> 3]
        if word >> 32 == SKIP:
            continue
        size = word & _LOW32
        out.append(extract(buf, off, size))
        nbytes += size
        got += 1
    hdr[_HEAD] = head + k  # commit point: the items are taken
    if simple:
        hdr[_FREED] = head + k
        freed = k
    else:  # a view is held behind these slots, or one of them is pinned
        for i in range(k):
            seg.u32[(_slot(seg, head + i) >> 2) + 1] = DONE
        freed = advance_freed(seg)
    hdr[_GETS] += got
    hdr[_BYTES_OUT] += nbytes
    if waited_ns and got:
        hdr[_GET_WAITS] += 1
        hdr[_GET_WAIT_NS] += waited_ns
    return got, freed, avail - k


# -- claims (the view paths) ------------------------------------------------------------------
def claim_put(seg: Segment, out: list[Any], n: int, waited_ns: int) -> tuple[int, int, int]:
    """Claim the slot at the tail for a put_view (WRITING): (1, 0, room) or (0, 0, room)."""
    hdr = seg.hdr
    tail: int = hdr[_TAIL]
    used: int = tail - hdr[_FREED]
    if used >= seg.capacity:
        return 0, 0, 0
    slot = _slot(seg, tail)
    seg.u64[(slot >> 3) + 1] = owner_id()
    seg.u64[slot >> 3] = WRITING << 32
    hdr[_TAIL] = tail + 1  # the claim
    if used + 1 > hdr[_HIGH]:
        hdr[_HIGH] = used + 1
    if waited_ns:
        hdr[_PUT_WAITS] += 1
        hdr[_PUT_WAIT_NS] += waited_ns
    out.append(slot)
    return 1, 0, seg.capacity - used - 1


def publish(seg: Segment, slot: int, size: int, ok: bool) -> int:
    """End a put_view: READY or, if its block raised, SKIP; return items now visible.

    Either way the slot is pinned by this process until its array is collected.
    """
    seg.u64[(slot >> 3) + 2] = owner_id()
    if ok:
        seg.u64[slot >> 3] = size | READY << 32
        seg.hdr[_PUTS] += 1
        seg.hdr[_BYTES_IN] += size
    else:
        seg.u64[slot >> 3] = SKIP << 32
    return advance_committed(seg)


def claim_get(seg: Segment, out: list[Any], n: int, waited_ns: int) -> tuple[int, int, int]:
    """Claim the item at the head for a get_view (READING): (1, freed, left) or (0, freed, 0)."""
    hdr = seg.hdr
    head: int = hdr[_HEAD]
    end: int = hdr[_COMMITTED]
    skipped = 0
    while head < end and _state(seg, head) == SKIP:  # discarded put_views: drop them
        seg.u32[(_slot(seg, head) >> 2) + 1] = DONE
        head += 1
        skipped += 1
    if head == end:
        hdr[_HEAD] = head
        return 0, advance_freed(seg) if skipped else 0, 0
    slot = _slot(seg, head)
    seg.u64[(slot >> 3) + 1] = owner_id()
    seg.u32[(slot >> 2) + 1] = READING
    hdr[_HEAD] = head + 1  # the claim
    hdr[_GETS] += 1
    hdr[_BYTES_OUT] += seg.u32[slot >> 2]
    if waited_ns:
        hdr[_GET_WAITS] += 1
        hdr[_GET_WAIT_NS] += waited_ns
    out.append(slot)
    return 1, advance_freed(seg) if skipped else 0, end - head - 1


def release(seg: Segment, slot: int, pin: bool) -> None:
    """Give back a slot a view held: a get_view's READING slot, or a put_view's pin."""
    if pin:
        seg.u64[(slot >> 3) + 2] = 0
    else:
        seg.u32[(slot >> 2) + 1] = DONE


# -- advancing (and recovering) the lagging counters ----------------------------------------
def advance_committed(seg: Segment, recover: bool = False) -> int:
    """Move ``committed`` over published slots (producer lock); return how many."""
    hdr = seg.hdr
    start = c = hdr[_COMMITTED]
    tail = hdr[_TAIL]
    while c < tail:
        state = _state(seg, c)
        if state == WRITING and recover and not owner_alive(seg.u64[(_slot(seg, c) >> 3) + 1]):
            seg.u64[_slot(seg, c) >> 3] = SKIP << 32  # its put_view died with its process
            state = SKIP
        if state != READY and state != SKIP:
            break
        c += 1
    hdr[_COMMITTED] = c
    return c - start  # type: ignore[no-any-return]


def advance_freed(seg: Segment, recover: bool = False) -> int:
    """Move ``freed`` over slots no view holds any more (consumer lock); return how many."""
    hdr = seg.hdr
    start = f = hdr[_FREED]
    head = hdr[_HEAD]
    u64 = seg.u64
    while f < head:
        slot = _slot(seg, f)
        state = seg.u32[(slot >> 2) + 1]
        pin = u64[(slot >> 3) + 2]
        if recover:
            if state == READING and not owner_alive(u64[(slot >> 3) + 1]):
                seg.u32[(slot >> 2) + 1] = state = DONE  # its get_view died with its process
            if pin and not owner_alive(pin):
                u64[(slot >> 3) + 2] = pin = 0
        # READY or SKIP here: taken by a get that copied it out and was killed before it
        # moved `freed` (a get moves `head` first); free like DONE.
        if state == READING or pin:
            break
        f += 1
    hdr[_FREED] = f
    return f - start  # type: ignore[no-any-return]
