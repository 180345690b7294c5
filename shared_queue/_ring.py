"""The ring: what puts, gets and views do to the header counters, the ring and the slots.

Each function says which lock it runs under: the producer lock guards ``tail``, ``reserved``,
``allocs``, ``cursor`` and the ring entries from ``tail`` on; the consumer lock guards
``head``, ``releases`` and the freeing of slots. ``reclaim`` runs under both, taken in the
one order there is: producer, then consumer (see ``_queue.SharedMemoryQueue._catch_up``).
No function here blocks or calls back into the caller except ``commit_get``'s ``extract``,
which only copies bytes.

A slot's life (states in ``_layout``)::

    FREE --put--> READY (in the ring) --get--> FREE
                                      --get_view--> READING --array gone--> FREE
    FREE --put_view--> WRITING --block ends--> READY (in the ring), pinned; or DONE, pinned

A pinned slot (``pin``: the process whose put_view array still views it) goes to DONE instead
of FREE when it is consumed, and to FREE when the array goes. A slot can leak, that is stay
out of the pool with nothing in the ring or alive referring to it, only when a process dies
inside a critical section (between its first slot store and its commit, or between a get's
commit and the freeing of its slots); ``reclaim`` gives such slots back.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Final

from . import _layout as L
from ._layout import DONE, FREE, READING, READY, WRITING
from ._sync import process_start_time

if TYPE_CHECKING:
    from ._segment import Segment

_TAIL, _RESERVED, _ALLOCS, _CURSOR = (L.IDX[f] for f in ("tail", "reserved", "allocs", "cursor"))
_PUTS, _BYTES_IN, _HIGH = L.IDX["puts"], L.IDX["bytes_in"], L.IDX["high_water"]
_PUT_WAITS, _PUT_WAIT_NS = L.IDX["put_waits"], L.IDX["put_wait_ns"]
_HEAD, _GETS, _BYTES_OUT = L.IDX["head"], L.IDX["gets"], L.IDX["bytes_out"]
_GET_WAITS, _GET_WAIT_NS = L.IDX["get_waits"], L.IDX["get_wait_ns"]
_RELEASES, _SWEEP = L.IDX["releases"], L.IDX["sweep"]
# Slot fields relative to a slot's offset: a u32 index delta for the state, u64 deltas for the
# owner and the pin (slot offsets are 64-aligned), the byte offset of the blob.
_STATE: Final = L.STATE_OFFSET >> 2
_OWNER: Final = L.OWNER_OFFSET >> 3
_PIN: Final = L.PIN_OFFSET >> 3
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


def slot_index(seg: Segment, off: int) -> int:
    """Return the pool index of the slot record at byte offset ``off``."""
    return (off - seg.slots_offset) // seg.slot_size


def pool_free(seg: Segment) -> int:
    """Return how many slots the counters say are FREE (a lower bound after a crash)."""
    hdr = seg.hdr
    return seg.pool - (hdr[_ALLOCS] - hdr[_RELEASES])  # type: ignore[no-any-return]


def room(seg: Segment) -> int:
    """Return how many more items the ring takes (puts and open put_views count)."""
    hdr = seg.hdr
    return seg.capacity - (hdr[_TAIL] + hdr[_RESERVED] - hdr[_HEAD])  # type: ignore[no-any-return]


def _find_free(seg: Segment, n: int) -> list[int] | None:
    """Return the offsets of ``n`` FREE slots, searching from the cursor (producer lock)."""
    hdr = seg.hdr
    pool = seg.pool
    if pool - (hdr[_ALLOCS] - hdr[_RELEASES]) < n:
        return None
    u32, base, size = seg.u32, seg.slots_offset, seg.slot_size
    s: int = hdr[_CURSOR]
    if n == 1 and s < pool and u32[((base + s * size) >> 2) + _STATE] == FREE:
        hdr[_CURSOR] = s + 1  # the usual case: the slot at the cursor came back first
        return [base + s * size]
    found = []
    for _ in range(pool):
        if s >= pool:
            s = 0
        off = base + s * size
        s += 1
        if u32[(off >> 2) + _STATE] == FREE:
            found.append(off)
            if len(found) == n:
                hdr[_CURSOR] = s
                return found
    return None  # the counters were off: a process died mid-put (see reclaim)


# -- the copy paths: put, put_batch, get, get_batch ---------------------------------------------
def commit_put(seg: Segment, payloads: list[Any], n: int, waited_ns: int) -> tuple[int, int, int]:
    """Write ``n`` payloads into free slots and append them (producer lock).

    Returns (items put, items now visible, room the ring had left). Nothing is put when the
    ring lacks room for all ``n`` or the pool lacks ``n`` free slots; room >= n then says it
    was the pool.
    """
    hdr = seg.hdr
    cap = seg.capacity
    tail: int = hdr[_TAIL]
    used: int = tail + hdr[_RESERVED] - hdr[_HEAD]
    if cap - used < n:
        return 0, 0, cap - used
    slots = _find_free(seg, n)
    if slots is None:
        return 0, 0, cap - used
    u64, buf, ring = seg.u64, seg.buf, seg.ring
    base, size_of = seg.slots_offset, seg.slot_size
    sizes = []
    for i, data in enumerate(payloads):
        blob = slots[i] + _BLOB
        if type(data) is bytes:
            size = len(data)
            buf[blob : blob + size] = data
        else:
            size = 0
            for part in data:  # parts are bytes or 1-d byte memoryviews
                n_part = len(part)
                buf[blob + size : blob + size + n_part] = part
                size += n_part
        sizes.append(size)
    # The slots leave the pool only now, so a put killed while copying leaves them FREE.
    for i, off in enumerate(slots):
        u64[off >> 3] = sizes[i] | READY << 32
        ring[(tail + i) % cap] = (off - base) // size_of
    nbytes = sum(sizes)
    hdr[_ALLOCS] += n
    hdr[_TAIL] = tail + n  # commit point: the items are visible from here on
    hdr[_PUTS] += n
    hdr[_BYTES_IN] += nbytes
    if used + n > hdr[_HIGH]:
        hdr[_HIGH] = used + n
    if waited_ns:
        hdr[_PUT_WAITS] += 1
        hdr[_PUT_WAIT_NS] += waited_ns
    return n, n, cap - used - n


def commit_get(seg: Segment, out: list[Any], limit: int, waited_ns: int) -> tuple[int, int, int]:
    """Copy up to ``limit`` items from the head into ``out`` and free their slots (consumer lock).

    Returns (items taken, ring entries freed, items left).
    """
    hdr = seg.hdr
    head: int = hdr[_HEAD]
    avail: int = hdr[_TAIL] - head
    if avail < 1:
        return 0, 0, 0
    k = avail if avail < limit else limit
    u64, buf, ring, cap = seg.u64, seg.buf, seg.ring, seg.capacity
    base, size_of = seg.slots_offset, seg.slot_size
    extract = seg.extract
    offs = []
    nbytes = 0
    for i in range(k):
        off = base + ring[(head + i) % cap] * size_of
        size = u64[off >> 3] & _LOW32
        out.append(extract(buf, off + _BLOB, size))
        nbytes += size
        offs.append(off)
    hdr[_HEAD] = head + k  # commit point: the items are taken
    _free(seg, offs)
    hdr[_GETS] += k
    hdr[_BYTES_OUT] += nbytes
    if waited_ns:
        hdr[_GET_WAITS] += 1
        hdr[_GET_WAIT_NS] += waited_ns
    if hdr[_SWEEP]:
        sweep(seg)
    return k, k, avail - k


def _free(seg: Segment, offs: list[int]) -> int:
    """Give consumed slots back to the pool, or mark DONE the pinned ones (consumer lock)."""
    u32, u64 = seg.u32, seg.u64
    freed = 0
    for off in offs:
        if u64[(off >> 3) + _PIN]:
            u32[(off >> 2) + _STATE] = DONE
        else:
            u32[(off >> 2) + _STATE] = FREE
            freed += 1
    seg.hdr[_RELEASES] += freed  # after the stores: the count never runs ahead of them
    return freed


# -- the view paths -------------------------------------------------------------------------------
def claim_put(seg: Segment, out: list[Any], n: int, waited_ns: int) -> tuple[int, int, int]:
    """Claim a free slot for a put_view (WRITING) and reserve a ring entry (producer lock).

    Returns (1, 0, room left) with the slot's offset in ``out``, or (0, 0, room) as
    ``commit_put`` does.
    """
    hdr = seg.hdr
    cap = seg.capacity
    used: int = hdr[_TAIL] + hdr[_RESERVED] - hdr[_HEAD]
    if used >= cap:
        return 0, 0, cap - used
    slots = _find_free(seg, 1)
    if slots is None:
        return 0, 0, cap - used
    off = slots[0]
    seg.u64[(off >> 3) + _OWNER] = owner_id()
    seg.u32[(off >> 2) + _STATE] = WRITING
    hdr[_ALLOCS] += 1
    hdr[_RESERVED] += 1  # the claim
    if used + 1 > hdr[_HIGH]:
        hdr[_HIGH] = used + 1
    if waited_ns:
        hdr[_PUT_WAITS] += 1
        hdr[_PUT_WAIT_NS] += waited_ns
    out.append(off)
    return 1, 0, cap - used - 1


def publish(seg: Segment, off: int, size: int, ok: bool) -> tuple[int, int]:
    """End a put_view (producer lock): append the item, or discard it if its block raised.

    Either way the slot stays pinned by this process until its array is collected. Returns
    (items now visible, ring entries given back).
    """
    hdr = seg.hdr
    seg.u64[(off >> 3) + _PIN] = owner_id()
    hdr[_RESERVED] -= 1
    if not ok:
        seg.u32[(off >> 2) + _STATE] = DONE
        return 0, 1
    tail: int = hdr[_TAIL]
    seg.u64[off >> 3] = size | READY << 32
    seg.ring[tail % seg.capacity] = slot_index(seg, off)
    hdr[_TAIL] = tail + 1  # commit point
    hdr[_PUTS] += 1
    hdr[_BYTES_IN] += size
    return 1, 0


def claim_get(seg: Segment, out: list[Any], n: int, waited_ns: int) -> tuple[int, int, int]:
    """Take the item at the head for a get_view (READING) (consumer lock).

    Returns (1, 1, items left) with the slot's offset in ``out``, or (0, 0, 0).
    """
    hdr = seg.hdr
    head: int = hdr[_HEAD]
    avail: int = hdr[_TAIL] - head
    if avail < 1:
        return 0, 0, 0
    off = seg.slots_offset + seg.ring[head % seg.capacity] * seg.slot_size
    seg.u64[(off >> 3) + _OWNER] = owner_id()
    seg.u32[(off >> 2) + _STATE] = READING
    hdr[_HEAD] = head + 1  # commit point: the item is taken
    hdr[_GETS] += 1
    hdr[_BYTES_OUT] += seg.u64[off >> 3] & _LOW32
    if waited_ns:
        hdr[_GET_WAITS] += 1
        hdr[_GET_WAIT_NS] += waited_ns
    if hdr[_SWEEP]:
        sweep(seg)
    out.append(off)
    return 1, 1, avail - 1


def release(seg: Segment, off: int, pin: bool) -> bool:
    """Give back a slot a view held: a get_view's READING slot, or a put_view's pin.

    Under the consumer lock. Returns whether the slot went back to the pool.
    """
    u32, u64 = seg.u32, seg.u64
    if pin:
        u64[(off >> 3) + _PIN] = 0
        if u32[(off >> 2) + _STATE] != DONE:
            return False  # still queued, or a get_view holds it
    elif u64[(off >> 3) + _PIN]:
        u32[(off >> 2) + _STATE] = DONE
        return False
    u32[(off >> 2) + _STATE] = FREE
    seg.hdr[_RELEASES] += 1
    return True


def release_unlocked(seg: Segment, off: int, pin: bool) -> None:
    """``release`` for a caller that could not take the consumer lock: the next consumer
    (or a producer that finds the pool dry) frees the slot in ``sweep``."""
    if pin:
        seg.u64[(off >> 3) + _PIN] = 0
    else:
        seg.u32[(off >> 2) + _STATE] = DONE
    seg.hdr[_SWEEP] = 1


def sweep(seg: Segment) -> int:
    """Free the DONE slots that nothing pins any more (consumer lock); return how many."""
    hdr = seg.hdr
    hdr[_SWEEP] = 0
    u32, u64 = seg.u32, seg.u64
    offs = []
    for s in range(seg.pool):
        off = seg.slots_offset + s * seg.slot_size
        if u32[(off >> 2) + _STATE] == DONE and not u64[(off >> 3) + _PIN]:
            offs.append(off)
    return _free(seg, offs)


def reclaim(seg: Segment, recover: bool) -> int:
    """Give back every slot that nothing in the ring or alive refers to (both locks).

    With ``recover``, slots and pins of dead processes go too, and ``reserved`` is recounted
    from the open put_views of live ones. Returns how many slots the pool gained.
    """
    sweep(seg)
    hdr = seg.hdr
    u32, u64, ring, cap = seg.u32, seg.u64, seg.ring, seg.capacity
    head: int = hdr[_HEAD]
    queued = {ring[k % cap] for k in range(head, hdr[_TAIL])}
    free = writing = 0
    offs = []
    for s in range(seg.pool):
        off = seg.slots_offset + s * seg.slot_size
        state = u32[(off >> 2) + _STATE]
        pin = u64[(off >> 3) + _PIN]
        if recover and pin and not owner_alive(pin):
            u64[(off >> 3) + _PIN] = pin = 0  # its put_view array died with its process
        if state == FREE:
            free += 1
            continue
        if s in queued:
            continue
        if state in (WRITING, READING):
            if not recover or owner_alive(u64[(off >> 3) + _OWNER]):
                writing += state == WRITING
                continue
        elif state == DONE and pin:
            continue
        # READY outside the ring (a put died before its commit, or a get after its own), a
        # DONE slot nothing pins, or a view of a dead process.
        if pin:
            u32[(off >> 2) + _STATE] = DONE
        else:
            offs.append(off)
    for off in offs:
        u32[(off >> 2) + _STATE] = FREE
    free += len(offs)
    gained = free - pool_free(seg)
    if hdr[_ALLOCS] < seg.pool - free:  # a put died between its slot stores and its count
        hdr[_ALLOCS] = seg.pool - free
    hdr[_RELEASES] = hdr[_ALLOCS] - (seg.pool - free)
    if recover:
        gained += hdr[_RESERVED] - writing
        hdr[_RESERVED] = writing
    return gained

