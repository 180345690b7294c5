"""faster-fifo: a C++ circular buffer in shared memory, bounded by bytes.

Sized ``max_size_bytes = capacity * item_size``, the same shared-memory footprint as
shared_queue; the batch rows use ``put_many`` / ``get_many(max_messages_to_get=n)``.
"""

from __future__ import annotations

from functools import partial

from ..common import OP_TIMEOUT, dist_version
from .base import Handle, Impl, Ops, not_importable


class FasterFifoImpl(Impl):
    key = "ff"
    label = "faster-fifo"

    def unavailable(self):
        return not_importable("faster_fifo")

    def create(self, capacity, item_size, array=None, peers=(1, 1)):
        import faster_fifo

        q = faster_fifo.Queue(max_size_bytes=capacity * item_size)
        return Handle(q, q)

    def ops(self, q):
        return Ops(
            put=partial(q.put, timeout=OP_TIMEOUT),
            get=partial(q.get, timeout=OP_TIMEOUT),
            put_many=partial(q.put_many, timeout=OP_TIMEOUT),
            get_many=lambda n: q.get_many(timeout=OP_TIMEOUT, max_messages_to_get=n),
        )

    def version(self):
        return dist_version("faster-fifo")
