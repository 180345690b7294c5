"""Item serialization: cloudpickle semantics at the C pickler's speed.

``cloudpickle.dumps`` costs about 3-6 us for a small dict, ``pickle.dumps`` under 1 us. Both
pickle importable functions and classes by reference and plain data identically; they differ
where plain pickle fails (lambdas, local or dynamic functions and classes, code objects) or
refers to ``__main__``, which a spawned process cannot import by that reference. So the C
pickler goes first, and its output is kept unless it failed or mentions ``__main__``; then
cloudpickle pickles by value. The output is ordinary pickle data for ``pickle.loads``.
"""

from __future__ import annotations

import io
import pickle
import threading
from typing import Any

import cloudpickle

PROTOCOL = 5
_SHRINK_ABOVE = 1 << 20  # drop a per-thread buffer that grew past this, not to pin memory

try:  # modules registered with cloudpickle.register_pickle_by_value (cloudpickle >= 2.0)
    from cloudpickle.cloudpickle import _PICKLE_BY_VALUE_MODULES as _BY_VALUE
except ImportError:  # pragma: no cover - a cloudpickle without it: always use cloudpickle
    _BY_VALUE = {"<unknown>"}


class Serializer:
    """Pickle with cloudpickle's by-value rules, reusing one cloudpickler per thread."""

    def __init__(self) -> None:
        self._tls = threading.local()

    def dumps(self, obj: Any) -> bytes:
        """Return the pickled bytes of ``obj``."""
        if not _BY_VALUE:
            try:
                data = pickle.dumps(obj, PROTOCOL)
            except Exception:
                pass  # cloudpickle may manage: lambdas, local classes, ...
            else:
                if b"__main__" not in data:
                    return data
        return self._cloudpickle(obj)

    def _fresh(self) -> tuple[io.BytesIO, Any]:
        buf = io.BytesIO()
        pickler = cloudpickle.CloudPickler(buf, protocol=PROTOCOL)
        self._tls.state = (buf, pickler)
        return buf, pickler

    def _cloudpickle(self, obj: Any) -> bytes:
        state = getattr(self._tls, "state", None)
        buf, pickler = state if state is not None else self._fresh()
        buf.seek(0)
        buf.truncate()
        pickler.clear_memo()
        try:
            pickler.dump(obj)
        except BaseException:
            self._fresh()  # a failed dump may leave the pickler mid-frame
            raise
        data = buf.getvalue()
        if len(data) > _SHRINK_ABOVE:
            self._fresh()
        return data


loads = pickle.loads
