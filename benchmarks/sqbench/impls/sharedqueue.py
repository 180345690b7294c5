"""shared_queue itself, in every mode and variant the benchmark gives a column.

One class, several columns: pickle mode (``shared_queue``, the ``base`` rows), ``[raw]``
(``raw=True``), ``[typed]`` (``dtype=``/``shape=`` slots), ``[view]`` (typed, read with
``get_view``), the lock swaps of ``nosafety.py`` (``[ofd+shim]``, ``[nosafety]``), and one
column per ``--variant``.

``--variant key=value[,key=value...]`` (repeatable) adds one shared_queue
column per variant: if ``shared_queue`` has a module attribute ``key`` it is
set for that run (children inherit it through fork), otherwise ``key=value``
is passed to the ``SharedMemoryQueue`` constructor of the creating process
(children attach by name without it).  Values are Python literals when they
parse as one, strings otherwise.  The bare words ``nosafety`` and ``ofdshim``
select the lock swap (see ``nosafety.py``).  A constructor kwarg that the
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
from .nosafety import LOCK_TAGS, LOCK_VARIANTS, LockSwap, swap_unavailable


class SharedQueueImpl(Impl):
    key = "sq"
    has_batch = True

    def __init__(
        self,
        variant: dict[str, Any] | None = None,
        *,
        mode: str | None = None,  # None (pickle), "raw", "typed" or "view" (typed, get_view)
        locks: str | None = None,  # None (as shipped), "shim" or "nosafety": see LockSwap
        roles: frozenset[str] = frozenset({"base"}),
    ):
        self.variant = dict(variant or {})
        for word, lock_mode in LOCK_VARIANTS.items():
            if self.variant.pop(word, False):
                locks = lock_mode
        self.mode, self.roles = mode, roles
        self.swap = LockSwap(locks) if locks else None
        tags = [f"{k}={v}" for k, v in self.variant.items()]
        tags += [mode] if mode else []
        tags += [LOCK_TAGS[locks]] if locks else []
        self.label = f"shared_queue[{','.join(tags)}]" if tags else "shared_queue"
        self._mod = None
        self._module_attrs: dict[str, Any] = {}
        self._ctor_kwargs: dict[str, Any] = {}

    def unavailable(self):
        try:
            self._mod = importlib.import_module("shared_queue")
            self._mod.SharedMemoryQueue  # noqa: B018 - probe the attribute
            if self.swap is not None:
                reason = swap_unavailable()
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
            with self.swap.installed() if self.swap else contextlib.nullcontext():
                yield
        finally:
            for k, v in saved.items():
                setattr(self._mod, k, v)

    def create(self, capacity, item_size, array=None):
        name = unique_name("sqbench")
        kwargs = dict(self._ctor_kwargs)
        if self.mode == "raw":
            kwargs["raw"] = True
        elif self.mode in ("typed", "view"):
            if array is None:
                raise BenchError("a typed queue needs an array workload")
            kwargs.update(dtype=array.dtype, shape=array.shape)
        if self.swap is not None:
            self.swap.add_queue(name)
        try:
            q = self._mod.SharedMemoryQueue(
                name, create=True, capacity=capacity, item_size=item_size, **kwargs
            )
        except BaseException:
            if self.swap is not None:
                self.swap.remove_queue(name)
            raise
        return Handle(q, name)

    def attach(self, endpoint):
        return self._mod.SharedMemoryQueue(endpoint)

    def detach(self, q):
        q.close()

    def destroy(self, handle):
        try:
            handle.obj.close()
        finally:
            try:
                handle.obj.unlink()
            finally:
                if self.swap is not None:
                    self.swap.remove_queue(handle.endpoint)

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
