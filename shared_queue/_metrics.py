"""A queue's metrics record, built from its header fields: one place for every metric.

``SharedMemoryQueue.get_metrics()``, ``qsize()`` and the command line (``stat``, ``stat --json``,
``stat --watch``, ``ls --json``) all call these functions, so a key means the same everywhere
and the size the CLI shows is the size a handle reports (issue 10, section 2).

The input is any mapping from header field name to value: a ``HeaderView`` of a live segment's
header, or the dict that the registry reads from a segment file.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, Final

from . import _layout as L

#: The keys of ``record()``, in order; docs/cli.md describes each.
KEYS: Final = (
    "queue_size",
    "queue_capacity",
    "queue_utilization_percent",
    "queue_item_size_bytes",
    "spare_slots",
    "total_puts",
    "total_gets",
    "bytes_in",
    "bytes_out",
    "high_water_mark",
    "put_waits",
    "put_wait_seconds",
    "get_waits",
    "get_wait_seconds",
)


def queue_size(h: Mapping[str, int]) -> int:
    """Return the number of items a get can return now (approximate while others operate).

    Clamped to ``0 <= size <= capacity``: the counters are read one after another, not at
    one instant. The values must be Python ints (numpy's unsigned ones would wrap below 0).
    """
    # Comparisons rather than min()/max(): qsize()/empty()/full() call this, ~1 us less.
    capacity = h["capacity"]
    used = h["tail"] - h["head"]
    return 0 if used < 0 else capacity if used > capacity else used


def record(h: Mapping[str, int]) -> dict[str, Any]:
    """Return the metrics record of a queue from its header fields, keyed as ``KEYS``."""
    capacity = int(h["capacity"])
    size = queue_size(h)
    return {
        "queue_size": size,
        "queue_capacity": capacity,
        "queue_utilization_percent": 100.0 * size / capacity,
        "queue_item_size_bytes": int(h["item_size"]),
        "spare_slots": int(h["spare_slots"]),
        "total_puts": int(h["puts"]),
        "total_gets": int(h["gets"]),
        "bytes_in": int(h["bytes_in"]),
        "bytes_out": int(h["bytes_out"]),
        "high_water_mark": int(h["high_water"]),
        "put_waits": int(h["put_waits"]),
        "put_wait_seconds": int(h["put_wait_ns"]) / 1e9,
        "get_waits": int(h["get_waits"]),
        "get_wait_seconds": int(h["get_wait_ns"]) / 1e9,
    }


class HeaderView(Mapping[str, int]):
    """The 8-byte fields of a live header, by name: ``HeaderView(segment.hdr)``.

    Each lookup reads the shared memory at that moment; nothing is copied or cached.
    """

    __slots__ = ("_hdr",)

    def __init__(self, hdr: memoryview) -> None:
        """Wrap ``hdr``, the header as a memoryview cast to ``"Q"``."""
        self._hdr = hdr

    def __getitem__(self, name: str) -> int:
        value: int = self._hdr[L.IDX[name]]
        return value

    def __iter__(self) -> Iterator[str]:
        return iter(L.IDX)

    def __len__(self) -> int:
        return len(L.IDX)
