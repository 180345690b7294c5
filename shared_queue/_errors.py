"""Exceptions raised by shared_queue."""

from __future__ import annotations

import queue


class Empty(queue.Empty):
    """Raised by a non-blocking or timed get when no item arrived in time."""


class Full(queue.Full):
    """Raised by a non-blocking or timed put when no room freed up in time."""


class IncompatibleQueueError(RuntimeError):
    """Raised when a name refers to a segment that is not a queue of this layout version."""
