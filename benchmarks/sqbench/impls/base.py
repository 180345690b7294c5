"""The adapter every implementation gives the workloads: create, attach, put/get, destroy."""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any


@dataclass
class Ops:
    """Bound operations on one queue handle (cheap to call in hot loops)."""

    put: Callable[[Any], None]
    get: Callable[[], Any]
    put_many: Callable[[list], None]
    get_many: Callable[[int], list]
    get_async: Callable[[], Any] | None = None  # a coroutine function, shared_queue only

    @classmethod
    def one_at_a_time(cls, put: Callable[[Any], None], get: Callable[[], Any]) -> Ops:
        """Ops of a queue without a batch API: put_many is one put per item, get_many one get."""

        def put_many(xs: list) -> None:
            for x in xs:
                put(x)

        def get_many(n: int) -> list:
            return [get()]

        return cls(put, get, put_many, get_many)


@dataclass
class Handle:
    obj: Any  # the parent's queue object
    endpoint: Any  # what a forked child needs to attach


@dataclass
class ArraySpec:
    """The arrays of an arrays workload: what typed queues need to know."""

    dtype: Any
    shape: tuple[int, ...]


class Impl:
    """Factory/adapter for one queue implementation.

    ``roles`` say which workloads give it a column: ``base`` (small dicts, arrays, sync
    rows of the async section), ``raw`` / ``typed`` (arrays), ``safety``.  ``key`` is its
    ``--impl`` name, ``label`` its column heading (and its key in the JSON).
    """

    key = ""
    label = ""
    has_batch = True
    roles: frozenset[str] = frozenset({"base"})

    def unavailable(self) -> str | None:
        """None if usable, else a reason."""
        return None

    def create(
        self,
        capacity: int,
        item_size: int,
        array: ArraySpec | None = None,
        peers: tuple[int, int] = (1, 1),
    ) -> Handle:
        """In the parent: make a queue for `peers` = (producer, consumer) processes."""
        raise NotImplementedError

    def attach(self, endpoint: Any) -> Any:
        """In a child: open the queue from its endpoint."""
        return endpoint

    def bind_consumer(self, q: Any) -> None:
        """Before the start barrier, on a handle that will get: be ready to receive.

        A socket library binds here, so that producers, which connect after the barrier,
        find the consumer there (pyzmq); a shared-memory queue is ready already.
        """

    def detach(self, q: Any) -> None:
        """In a child: release the queue."""

    def destroy(self, handle: Handle) -> None:
        """In the parent: release and remove the queue."""

    def ops(self, q: Any) -> Ops:
        raise NotImplementedError

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        """Context in which every run of this implementation happens."""
        yield

    def version(self) -> str:
        return ""


def not_importable(module: str, dist: str | None = None) -> str | None:
    """None if `module` imports, else the reason, naming the distribution to install."""
    try:
        importlib.import_module(module)
    except Exception as e:
        return f"{dist or module} not importable: {e!r}"
    return None
