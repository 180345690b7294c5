"""Section ``safety``: the hot-path cost of crash safety.

The shipped design locks each side of a queue with a robust process-shared pthread mutex in
the segment header (``PTHREAD_MUTEX_ROBUST``): a holder's death is reported to the next
locker, which recovers the queue. "The same design without crash safety" is the same code
over plain process-shared mutexes, which a holder killed inside the critical section would
leave locked for good: the library's benchmark-only switch ``_segment.LOCK_KIND =
_layout.LOCK_UNSAFE``, set while the benchmark parent creates the queue (``nosafety.py``);
the children attach and use the kind the header records. Columns: ``shared_queue`` (as
shipped) and ``shared_queue[nosafety]``, interleaved in one run. The cost is ``1 - safe /
nosafety`` of the items/s: the share of throughput that crash safety costs (the issue's
target: at most 5%). ``--variant nosafety`` adds the unsafe design as a column to the other
sections.
"""

from __future__ import annotations

from .base import Workload, safety
from .small import single

# The columns the rows compare: the cost is 1 - SAFE_LABEL / NOSAFETY_LABEL.
SAFE_LABEL, NOSAFETY_LABEL = "shared_queue", "shared_queue[nosafety]"

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
