"""shared_queue itself, in every mode and variant the benchmark gives a column.

One class, several columns: pickle mode (``shared_queue``, the ``base`` rows), ``[raw]``
(``raw=True``), ``[typed]`` (``dtype=``/``shape=`` slots), ``[view]`` (typed, read with
``get_view``), the unsafe-mutex baseline of ``nosafety.py`` (``[nosafety]``), and one column
per ``--variant``.

``--variant key=value[,key=value...]`` (repeatable) adds one shared_queue
column per variant: if ``shared_queue`` has a module attribute ``key`` it is
set for that run (children inherit it through fork), otherwise ``key=value``
is passed to the ``SharedMemoryQueue`` constructor of the creating process
(children attach by name without it).  Values are Python literals when they
parse as one, strings otherwise.  The bare word ``nosafety`` creates the
queues with plain (non-robust) mutexes (see ``nosafety.py``).  A constructor kwarg that the
library accepts but ignores gives identical columns, so check that a variant
really switches something.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
from collections.abc import Callable
from functools import partial
from typing import Any

from ..common import OP_TIMEOUT, BenchError, git_rev, unique_name
from .base import Handle, Impl, Ops
from .nosafety import NOSAFETY, expected_lock_kind, lock_kind, unsafe_locks, unsafe_unavailable


class SharedQueueImpl(Impl):
    key = "sq"
    has_batch = True

    def __init__(
        self,
        variant: dict[str, Any] | None = None,
        *,
        mode: str | None = None,  # None (pickle), "raw", "typed" or "view" (typed, get_view)
        unsafe: bool = False,  # plain process-shared mutexes, no crash safety: see nosafety.py
        roles: frozenset[str] = frozenset({"base"}),
    ):
        self.variant = dict(variant or {})
        self.unsafe = bool(self.variant.pop(NOSAFETY, False)) or unsafe
        self.mode, self.roles = mode, roles
        tags = [f"{k}={v}" for k, v in self.variant.items()]
        tags += [mode] if mode else []
        tags += [NOSAFETY] if self.unsafe else []
        self.label = f"shared_queue[{','.join(tags)}]" if tags else "shared_queue"
        self._mod = None
        self._module_attrs: dict[str, Any] = {}
        self._ctor_kwargs: dict[str, Any] = {}

    def unavailable(self):
        try:
            self._mod = importlib.import_module("shared_queue")
            self._mod.SharedMemoryQueue  # noqa: B018 - probe the attribute
            if self.unsafe:
                reason = unsafe_unavailable()
                if reason:
                    return reason
        except Exception as e:
            return f"shared_queue not importable: {e!r}"
        for k, v in self.variant.items():
            if hasattr(self._mod, k):
                self._module_attrs[k] = v
            else:
                self._ctor_kwargs[k] = v
        return None

    @contextlib.contextmanager
    def active(self):
        saved = {k: getattr(self._mod, k) for k in self._module_attrs}
        try:
            for k, v in self._module_attrs.items():
                setattr(self._mod, k, v)
            yield
        finally:
            for k, v in saved.items():
                setattr(self._mod, k, v)

    def create(self, capacity, item_size, array=None, peers=(1, 1)):
        name = unique_name("sqbench")
        kwargs = dict(self._ctor_kwargs)
        if self.mode == "raw":
            kwargs["raw"] = True
        elif self.mode in ("typed", "view"):
            if array is None:
                raise BenchError("a typed queue needs an array workload")
            kwargs.update(dtype=array.dtype, shape=array.shape)
        with unsafe_locks() if self.unsafe else contextlib.nullcontext():
            q = self._mod.SharedMemoryQueue(
                name, create=True, capacity=capacity, item_size=item_size, **kwargs
            )
        handle = Handle(q, name)
        try:
            # A column must measure the locks it is labelled with (the switch is internal).
            kind, want = lock_kind(name), expected_lock_kind(self.unsafe)
            if kind != want:
                raise BenchError(f"{self.label}: queue {name} has lock_kind {kind}, want {want}")
        except BaseException:
            self.destroy(handle)
            raise
        return handle

    def attach(self, endpoint):
        return self._mod.SharedMemoryQueue(endpoint)

    def detach(self, q):
        q.close()

    def destroy(self, handle):
        try:
            handle.obj.close()
        finally:
            handle.obj.unlink()

    def ops(self, q):
        # put_batch/get_batch may or may not take a timeout; pass it if they do.
        put_batch = _with_timeout_if_supported(q.put_batch)
        get_batch = _with_timeout_if_supported(q.get_batch)
        get_async = getattr(q, "get_async", None)
        return Ops(
            put=partial(q.put, timeout=OP_TIMEOUT),
            get=(
                partial(_view_get, q) if self.mode == "view" else partial(q.get, timeout=OP_TIMEOUT)
            ),
            put_many=put_batch,
            get_many=get_batch,
            get_async=partial(get_async, timeout=OP_TIMEOUT) if get_async else None,
        )

    def version(self):
        return getattr(self._mod, "__version__", "") + f" ({git_rev()})"


def _view_get(q: Any) -> Any:
    """get_view instead of get: touch the item in place; the slot returns when it is dropped."""
    with q.get_view(timeout=OP_TIMEOUT) as arr:
        arr[0]  # read in place, no copy
    return arr


def _with_timeout_if_supported(fn: Callable) -> Callable:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return fn
    return partial(fn, timeout=OP_TIMEOUT) if "timeout" in params else fn
