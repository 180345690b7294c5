"""The unsafe-mutex baseline: shared_queue with plain process-shared mutexes in the segment.

BENCHMARK-ONLY SWITCH -- "the same design without crash safety".

shared_queue locks each side of a queue with a pthread mutex in the segment header, made
``PTHREAD_PROCESS_SHARED`` + ``PTHREAD_MUTEX_ROBUST`` so that a holder's death is reported to
the next locker (``EOWNERDEAD``), which recovers the queue. The header records the kind
(``lock_kind``). The library has one switch for this baseline: with
``shared_queue._segment.LOCK_KIND = shared_queue._layout.LOCK_UNSAFE`` set while a queue is
CREATED, the new segment gets plain process-shared mutexes (no owner-death recovery: a holder
killed inside the critical section leaves the queue locked for good). Every handle then uses
whatever the header says, so the children of a run, which attach by name, need no switch.
``unsafe_locks`` sets it around the creation in the benchmark parent and ``lock_kind`` reads
the header back, so that a run can prove the queue it measured has the kind it claims.
Never use this outside the benchmark: it removes crash safety.
"""

from __future__ import annotations

import contextlib
import importlib
import os
from collections.abc import Iterator

# The bare word of --variant that selects the unsafe mutexes, and the column label tag.
NOSAFETY = "nosafety"


def unsafe_unavailable() -> str | None:
    """None if shared_queue has the switch ``unsafe_locks`` sets, else the reason."""
    try:
        segment = importlib.import_module("shared_queue._segment")
        layout = importlib.import_module("shared_queue._layout")
    except Exception as e:
        return f"shared_queue internals not importable: {e!r}"
    if not hasattr(segment, "LOCK_KIND") or not hasattr(layout, "LOCK_UNSAFE"):
        return "shared_queue._segment.LOCK_KIND / _layout.LOCK_UNSAFE not found (unsafe mutexes)"
    return None


@contextlib.contextmanager
def unsafe_locks() -> Iterator[None]:
    """Queues created in this block (by this process) get non-robust mutexes."""
    import shared_queue._layout as layout
    import shared_queue._segment as segment

    saved = segment.LOCK_KIND
    segment.LOCK_KIND = layout.LOCK_UNSAFE
    try:
        yield
    finally:
        segment.LOCK_KIND = saved


def lock_kind(name: str, run_id: str = "") -> int:
    """The ``lock_kind`` field of queue `name`'s segment header, read from /dev/shm."""
    from shared_queue import _layout, _names

    offset = _layout.HEADER_DTYPE.fields["lock_kind"][1]
    with open(os.path.join(_names.SHM_DIR, _names.base_name(name, run_id)), "rb") as f:
        f.seek(offset)
        return int.from_bytes(f.read(8), "little")


def expected_lock_kind(unsafe: bool) -> int:
    """The ``lock_kind`` a queue of this column must have."""
    from shared_queue import _layout

    return int(_layout.LOCK_UNSAFE if unsafe else _layout.LOCK_ROBUST)
