"""``NatsQueue``: shared_queue's NATS JetStream backend, behind the same adapter as the others.

One column, ``NatsQueue``: ``shared_queue.connect("nats://...", name, create=True, ...)`` on
the run's own server (``natsserver.py``), a pickle queue for the small-dict rows and a raw
queue (``raw=True``) for the array rows. The parent creates the queue and ``unlink()``s it at
the end; a forked child attaches by name with a connection of its own, as a worker on another
host would. Calls go through the sync API (``put``, ``get``, ``put_batch``, ``get_batch``),
each with the benchmark's timeout; the round-trip rows also use ``put_async``/``get_async``.
"""

from __future__ import annotations

import hashlib
import importlib
from functools import partial

from .. import natsserver
from ..common import OP_TIMEOUT, REPO_ROOT, git_rev, unique_name
from .base import Handle, Impl, Ops, not_importable


class NatsQueueImpl(Impl):
    key = "nats"
    label = "NatsQueue"
    has_batch = True
    roles = frozenset({"nats"})

    def __init__(self) -> None:
        self._mod = None

    def unavailable(self):
        reason = not_importable("nats", "nats-py")
        if reason:
            return reason
        try:
            self._mod = importlib.import_module("shared_queue")
            self._mod.connect  # noqa: B018 - probe the attribute
        except Exception as e:
            return f"shared_queue.connect not importable: {e!r}"
        try:
            natsserver.url()
        except natsserver.NatsServerUnavailable as e:
            return str(e)
        return None

    def create(self, capacity, item_size, array=None, peers=(1, 1)):
        url, name = natsserver.url(), unique_name("sqbench")
        q = self._mod.connect(
            url, name, create=True, capacity=capacity, item_size=item_size, raw=array is not None
        )
        return Handle(q, (url, name))

    def attach(self, endpoint):
        url, name = endpoint
        return self._mod.connect(url, name)

    def detach(self, q):
        q.close()

    def destroy(self, handle):
        try:
            handle.obj.unlink()
        finally:
            handle.obj.close()

    def ops(self, q):
        return Ops(
            put=partial(q.put, timeout=OP_TIMEOUT),
            get=partial(q.get, timeout=OP_TIMEOUT),
            put_many=partial(q.put_batch, timeout=OP_TIMEOUT),
            get_many=partial(q.get_batch, timeout=OP_TIMEOUT),
            get_async=partial(q.get_async, timeout=OP_TIMEOUT),
        )

    def version(self):
        # The backend changes between commits: name the very files measured.
        files = ", ".join(f"{f} {_digest(f)}" for f in ("_nats.py", "_natsio.py"))
        return (
            getattr(self._mod, "__version__", "")
            + f" ({git_rev()}; sha256 {files}); nats-server {natsserver.version()}"
        )


def _digest(name: str) -> str:
    try:
        return hashlib.sha256((REPO_ROOT / "shared_queue" / name).read_bytes()).hexdigest()[:10]
    except OSError:
        return "?"
