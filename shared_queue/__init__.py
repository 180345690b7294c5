"""shared_queue: a named, picklable, crash-tolerant shared-memory multiprocessing queue,
and the same queue over NATS JetStream for several hosts (``connect``)."""

from ._async import SharedMemoryQueue
from ._bridge import bridge
from ._connect import Queue, connect
from ._errors import Empty, Full, IncompatibleQueueError

__all__ = [
    "Empty",
    "Full",
    "IncompatibleQueueError",
    "Queue",
    "SharedMemoryQueue",
    "bridge",
    "connect",
]
__version__ = "0.5.0"
