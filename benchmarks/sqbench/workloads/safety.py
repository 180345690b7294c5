"""Section ``safety``: the hot-path cost of crash safety.

The shipped design locks each side with Linux OFD byte-range locks (``fcntl(fd,
F_OFD_SETLKW, ...)``), which the kernel drops when a holder dies.  "The same design without
crash safety" swaps those for POSIX semaphore mutexes (a killed holder leaves one locked
forever): see ``LockSwap`` in ``impls/nosafety.py``, a benchmark-only monkeypatch of
``shared_queue._queue.fcntl`` that leaves every other line of the code path as it is.
Columns: ``shared_queue`` (as shipped), ``shared_queue[ofd+shim]`` (OFD locks called through
the same Python shim as the swap, so that the shim's own cost cancels out) and
``shared_queue[nosafety]``.  The cost is ``1 - safe / nosafety`` of the items/s: the share
of throughput that crash safety costs (the goal: at most 15%).  ``--variant nosafety`` (or
``ofdshim``) adds the swapped design as a column to the other sections.
"""

from __future__ import annotations

from .base import Workload, safety
from .small import single

# The columns the rows compare: the costs are 1 - SAFE / NOSAFETY and 1 - SHIM / NOSAFETY.
SAFE_LABEL, SHIM_LABEL, NOSAFETY_LABEL = (
    "shared_queue",
    "shared_queue[ofd+shim]",
    "shared_queue[nosafety]",
)
SAFE_COLUMNS = (SAFE_LABEL, SHIM_LABEL)  # each gets a cost column against NOSAFETY_LABEL

ROWS = [
    Workload(
        "safety_single_1x1",
        "1p->1c small dicts, single put/get",
        "items/s",
        True,
        single(1, 1),
        safety,
    ),
    Workload(
        "safety_single_2x2",
        "2p->2c small dicts, single put/get",
        "items/s",
        True,
        single(2, 2),
        safety,
    ),
]
SECTION = [w.key for w in ROWS]
