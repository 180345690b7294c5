"""multiprocessing.Queue: the baseline every ratio is taken against.

Sized ``maxsize=capacity``.  It has no batch API, so the batch rows do single put/get.
"""

from __future__ import annotations

import platform
from functools import partial

from ..common import CTX, OP_TIMEOUT
from .base import Handle, Impl, Ops


class MpQueueImpl(Impl):
    key = "mp"
    label = "mp.Queue"
    has_batch = False

    def create(self, capacity, item_size, array=None, peers=(1, 1)):
        q = CTX.Queue(maxsize=capacity)
        return Handle(q, q)

    def detach(self, q):
        q.close()
        q.join_thread()  # flush the feeder thread before the child exits

    def destroy(self, handle):
        self.detach(handle.obj)

    def ops(self, q):
        return Ops.one_at_a_time(
            put=partial(q.put, timeout=OP_TIMEOUT), get=partial(q.get, timeout=OP_TIMEOUT)
        )

    def version(self):
        return platform.python_version()
