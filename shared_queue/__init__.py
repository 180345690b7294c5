"""shared_queue: a named, picklable, crash-tolerant shared-memory multiprocessing queue."""

from ._async import SharedMemoryQueue
from ._errors import Empty, Full, IncompatibleQueueError

__all__ = ["Empty", "Full", "IncompatibleQueueError", "SharedMemoryQueue"]
__version__ = "0.3.0"
