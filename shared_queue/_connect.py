"""``connect()``: one call that opens a queue on either backend, chosen by a URL, and the
``Queue`` protocol that both backends' handles satisfy."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from ._async import SharedMemoryQueue
    from ._nats import NatsQueue


@runtime_checkable
class Queue(Protocol):
    """The API a queue has on every backend (docs/api.md): ``SharedMemoryQueue`` and
    ``NatsQueue`` both satisfy it. The zero-copy views are shared memory's alone."""

    @property
    def name(self) -> str: ...
    @property
    def run_id(self) -> str: ...
    @property
    def capacity(self) -> int: ...
    @property
    def item_size(self) -> int: ...
    @property
    def raw(self) -> bool: ...
    @property
    def dtype(self) -> np.dtype[Any] | None: ...
    @property
    def shape(self) -> tuple[int, ...] | None: ...
    @property
    def closed(self) -> bool: ...
    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None: ...
    def put_nowait(self, item: Any) -> None: ...
    def put_batch(
        self, items: Iterable[Any], block: bool = True, timeout: float | None = None
    ) -> None: ...
    def get(self, block: bool = True, timeout: float | None = None) -> Any: ...
    def get_nowait(self) -> Any: ...
    def get_batch(
        self, max_items: int, block: bool = True, timeout: float | None = None
    ) -> list[Any]: ...
    async def put_async(self, item: Any, timeout: float | None = None) -> None: ...
    async def put_batch_async(self, items: Iterable[Any], timeout: float | None = None) -> None: ...
    async def get_async(self, timeout: float | None = None) -> Any: ...
    async def get_batch_async(self, max_items: int, timeout: float | None = None) -> list[Any]: ...
    def qsize(self) -> int: ...
    def empty(self) -> bool: ...
    def full(self) -> bool: ...
    def get_metrics(self) -> dict[str, Any]: ...
    def close(self) -> None: ...
    def unlink(self) -> None: ...
    def __enter__(self) -> Any: ...
    def __exit__(self, *exc_info: object) -> None: ...


def connect(
    url: str,
    name: str,
    *,
    create: bool = False,
    capacity: int = 1000,
    item_size: int = 4096,
    raw: bool = False,
    dtype: npt.DTypeLike | None = None,
    shape: tuple[int, ...] | int | None = None,
    run_id: str = "",
    replicas: int | None = None,
    **options: Any,
) -> SharedMemoryQueue | NatsQueue:
    """Open (or with ``create=True`` create) the queue ``name`` on the backend ``url`` names.

    ``"shm://"`` gives a ``SharedMemoryQueue`` on this host; ``"nats://host:port[,host:port
    ...][?replicas=3]"`` gives a ``NatsQueue`` on a NATS JetStream server or cluster (needs
    ``pip install 'shared-multiprocess-queue[nats]'``). Both have the same API and rules;
    ``options`` go to the backend's class (``spare_slots``, ``recovery_interval`` for shared
    memory; ``connect_timeout``, ``io_timeout``, ``ack_wait`` and nats-py's connect options
    for NATS).

    Raises:
        ValueError: An unknown scheme, a malformed URL, or ``replicas`` for shared memory.
        ImportError: A nats:// URL without nats-py installed (names the extra to install).
        The backend's own errors: see ``SharedMemoryQueue`` and ``NatsQueue``.
    """
    if not isinstance(url, str):
        raise TypeError(f"url must be a str, not {type(url).__name__}")
    scheme = url.partition("://")[0]
    common: dict[str, Any] = {
        "create": create, "capacity": capacity, "item_size": item_size,
        "run_id": run_id, "raw": raw, "dtype": dtype, "shape": shape,
    }  # fmt: skip
    if scheme == "shm":
        if url.rstrip("/") != "shm:":
            raise ValueError(f"a shm URL names no host or path: use 'shm://', not {url!r}")
        if replicas not in (None, 1):
            raise ValueError("replicas applies to nats:// queues; shared memory has one copy")
        from ._async import SharedMemoryQueue

        return SharedMemoryQueue(name, **common, **options)
    if scheme in ("nats", "tls"):
        from ._nats import NatsQueue

        return NatsQueue(url, name, replicas=replicas, **common, **options)
    raise ValueError(
        f"unknown queue URL {url.split('@')[-1]!r}: use 'shm://' or 'nats://host:port'"
    )
