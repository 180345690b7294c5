"""Item codecs: how an item becomes the bytes of a slot, and back.

Pickle mode (the default) pickles with cloudpickle semantics at the C pickler's speed.
``cloudpickle.dumps`` costs about 3-6 us for a small dict, ``pickle.dumps`` under 1 us. Both
pickle importable functions and classes by reference and plain data identically; they differ
where plain pickle fails (lambdas, local or dynamic functions and classes, code objects) or
refers to ``__main__``, which a spawned process cannot import by that reference. So the C
pickler goes first (``_core.dumps``, which the shared-memory core also calls itself), and its
output is kept unless it failed, mentions ``__main__`` or modules are registered to be pickled
by value; then cloudpickle pickles by value. Buffers that protocol 5 hands out of band (numpy
arrays inside an object) are written straight into the slot after the pickle, not copied into it
first.

Raw mode writes an ndarray's or a bytes-like object's bytes after a small descriptor (dtype,
shape, order) and never pickles. A slot's blob is then::

    pickle:     the pickle (first byte 0x80, the PROTO opcode)
    pickle+oob: 0x00 | u4 n | u8 pickle_len | u8 len_1 .. len_n | pad64 | pickle | pad64 |
                buffer_1 | pad64 | ... buffer_n
    raw:        u4 desc_len | u1 kind | u1 order | u2 ndim | i8 shape[ndim] | dtype descr |
                pad to desc_len (a multiple of 64) | data

An encoded item is ``bytes`` (one part) or a ``Parts`` tuple of byte buffers written back to
back, whose ``nbytes`` is their total size.
"""

from __future__ import annotations

import ast
import io
import math
import pickle
import struct
import sys
import threading
from typing import Any, Final, Literal

import cloudpickle
import numpy as np

from . import _core

PROTOCOL: Final = 5
_SHRINK_ABOVE: Final = 1 << 20  # drop a per-thread buffer that grew past this
_PAD: Final = 64

try:  # modules registered with cloudpickle.register_pickle_by_value (cloudpickle >= 2.0)
    from cloudpickle.cloudpickle import _PICKLE_BY_VALUE_MODULES as _BY_VALUE
except ImportError:  # pragma: no cover - a cloudpickle without it: always use cloudpickle
    _BY_VALUE = {"<unknown>"}
_core.pickle_rules(PROTOCOL, _BY_VALUE)


def _pad(n: int) -> int:
    return -(-n // _PAD) * _PAD


class Parts(tuple):  # type: ignore[type-arg]
    """Byte buffers written back to back into one slot; ``nbytes`` is their total size."""

    nbytes: int

    def __new__(cls, parts: list[Any], nbytes: int) -> Parts:
        self = super().__new__(cls, parts)
        self.nbytes = nbytes
        return self


def payload_size(payload: bytes | Parts) -> int:
    """Return the number of bytes ``payload`` takes in a slot."""
    return len(payload) if payload.__class__ is bytes else payload.nbytes  # type: ignore[union-attr]


# -- pickle mode --------------------------------------------------------------------------------
_OOB_HEAD = struct.Struct("<BxxxIQ")  # marker 0, buffer count, pickle length


class PickleCodec:
    """Pickle with cloudpickle's by-value rules; numpy buffers travel out of band."""

    raw = False

    def __init__(self) -> None:
        self._tls = threading.local()

    def encode(self, obj: Any) -> bytes | Parts:
        """Return the slot bytes of ``obj``."""
        return self.finish(obj, _core.dumps(obj))

    def finish(self, obj: Any, tried: tuple[bytes | None, list[Any]]) -> bytes | Parts:
        """Return the slot bytes of ``obj`` from the C pickler's try at it, ``tried``:
        (its pickle, or None for cloudpickle's turn; the buffers handed out of band)."""
        data, buffers = tried
        if data is None:
            data = self._cloudpickle(obj, buffers)
        if not buffers:
            return data
        return _frame_oob(data, [b.raw() for b in buffers])

    def _cloudpickle(self, obj: Any, buffers: list[pickle.PickleBuffer]) -> bytes:
        state = getattr(self._tls, "state", None)
        if state is None:
            state = self._fresh()
        buf, pickler, sink = state
        buf.seek(0)
        buf.truncate()
        pickler.clear_memo()
        sink.clear()
        try:
            pickler.dump(obj)
        except BaseException:
            self._fresh()  # a failed dump may leave the pickler mid-frame
            raise
        data = buf.getvalue()
        buffers.extend(sink)
        sink.clear()
        if len(data) > _SHRINK_ABOVE:
            self._fresh()
        return data

    def _fresh(self) -> tuple[io.BytesIO, Any, list[pickle.PickleBuffer]]:
        buf = io.BytesIO()
        sink: list[pickle.PickleBuffer] = []
        pickler = cloudpickle.CloudPickler(buf, protocol=PROTOCOL, buffer_callback=sink.append)
        self._tls.state = (buf, pickler, sink)
        return self._tls.state  # type: ignore[no-any-return]

    @staticmethod
    def decode(data: bytes | bytearray) -> Any:
        """Return the item whose pickle the core copied out (a bytearray when it has buffers)."""
        if data.__class__ is bytes:
            return pickle.loads(data)
        _, n, plen = _OOB_HEAD.unpack_from(data, 0)
        lengths = struct.unpack_from(f"<{n}Q", data, _OOB_HEAD.size)
        view = memoryview(data)
        pos = _pad(_OOB_HEAD.size + 8 * n)
        pickled = view[pos : pos + plen]
        pos = _pad(pos + plen)
        buffers = []
        for length in lengths:
            buffers.append(view[pos : pos + length])
            pos = _pad(pos + length)
        return pickle.loads(pickled, buffers=buffers)


def _frame_oob(data: bytes, raws: list[memoryview]) -> Parts:
    n = len(raws)
    head = _OOB_HEAD.pack(0, n, len(data)) + struct.pack(f"<{n}Q", *(r.nbytes for r in raws))
    parts: list[Any] = [head, b"\0" * (_pad(len(head)) - len(head)), data]
    pos = _pad(len(head)) + len(data)
    for r in raws:
        parts.append(b"\0" * (_pad(pos) - pos))
        pos = _pad(pos)
        parts.append(r)
        pos += r.nbytes
    return Parts(parts, pos)


# -- raw mode -----------------------------------------------------------------------------------
_RAW_HEAD = struct.Struct("<IBBH")  # descriptor length, kind, order, ndim
_ARRAY, _BYTES = 1, 2
_C, _F = 0, 1
_BYTES_DESC = _RAW_HEAD.pack(_PAD, _BYTES, _C, 0).ljust(_PAD, b"\0")


def dtype_to_bytes(dtype: np.dtype[Any]) -> bytes:
    """Return a text form of ``dtype`` that ``dtype_from_bytes`` reads back exactly."""
    return repr(np.lib.format.dtype_to_descr(dtype)).encode()


def dtype_from_bytes(text: bytes) -> np.dtype[Any]:
    """Return the dtype that ``dtype_to_bytes`` wrote."""
    return np.lib.format.descr_to_dtype(ast.literal_eval(text.decode()))


def descriptor(dtype: np.dtype[Any], shape: tuple[int, ...], order: int = _C) -> bytes:
    """Return the raw-mode descriptor of an array of ``dtype`` and ``shape``."""
    text = dtype_to_bytes(dtype)
    body = struct.pack(f"<{len(shape)}q", *shape) + text
    size = _pad(_RAW_HEAD.size + len(body))
    return (_RAW_HEAD.pack(size, _ARRAY, order, len(shape)) + body).ljust(size, b"\0")


class RawCodec:
    """Arrays and bytes-like objects as their bytes plus a descriptor; no pickling.

    Args:
        label: The queue's name, for messages.
        dtype: The typed queue's item dtype, or None for any array.
        shape: The typed queue's item shape, or None for any array.
    """

    raw = True

    def __init__(
        self, label: str, dtype: np.dtype[Any] | None = None, shape: tuple[int, ...] | None = None
    ) -> None:
        self._label = label
        self._dtype = dtype
        self._shape = shape
        self._enc: dict[tuple[Any, ...], bytes] = {}
        self._dec: dict[bytes, tuple[np.dtype[Any], tuple[int, ...], Literal["C", "F"], int]] = {}

    def encode(self, obj: Any) -> Parts:
        """Return the slot bytes of an ndarray or bytes-like ``obj``."""
        if isinstance(obj, np.ndarray):
            return self._encode_array(obj)
        if isinstance(obj, (bytes, bytearray, memoryview)):
            if self._dtype is not None:
                raise TypeError(
                    f"typed queue {self._label} takes {self._describe_type()} arrays, not "
                    f"{type(obj).__name__}"
                )
            view = memoryview(obj)
            if not view.c_contiguous:
                view = memoryview(view.tobytes())
            view = view.cast("B") if view.format != "B" or view.ndim != 1 else view
            return Parts([_BYTES_DESC, view], _PAD + view.nbytes)
        raise TypeError(
            f"raw queue {self._label} takes numpy arrays and bytes-like objects, "
            f"not {type(obj).__name__} (create the queue without raw=True to pickle objects)"
        )

    def _describe_type(self) -> str:
        return f"{self._dtype} of shape {self._shape}"

    def _encode_array(self, arr: np.ndarray[Any, Any]) -> Parts:
        dtype = arr.dtype
        if dtype.hasobject:
            raise TypeError(
                f"raw queue {self._label} cannot send arrays of dtype {dtype} (it holds Python "
                "objects); use a queue without raw=True"
            )
        if self._dtype is not None and (dtype != self._dtype or arr.shape != self._shape):
            raise ValueError(
                f"array of {dtype} with shape {arr.shape} does not match typed queue "
                f"{self._label} ({self._describe_type()}); convert it first, nothing is cast"
            )
        if arr.flags.c_contiguous:
            order, flat = _C, arr
        elif arr.flags.f_contiguous:
            order, flat = _F, arr.T
        else:
            order, flat = _C, np.ascontiguousarray(arr)
        key = (dtype, arr.shape, order)
        desc = self._enc.get(key)
        if desc is None:
            if len(self._enc) > 256:
                self._enc.clear()
            desc = self._enc[key] = descriptor(dtype, arr.shape, order)
        data = flat.reshape(-1).view(np.uint8).data if arr.nbytes else b""
        return Parts([desc, data], len(desc) + arr.nbytes)

    def view(self, buf: memoryview, off: int, size: int) -> np.ndarray[Any, Any]:
        """Return a read-only array that views the item in its slot (bytes as uint8).

        Raises:
            ValueError: The item's descriptor does not fit its bytes; no array was made.
        """
        try:
            desc_len, dtype, shape, order = self._parse(buf, off, size)
        except ValueError as exc:
            raise _Undecodable(size, str(exc)).error(self._label) from None
        if dtype is None:
            arr = np.frombuffer(buf, np.uint8, size - desc_len, off + desc_len)
        else:
            arr = np.ndarray(shape, dtype, buffer=buf, offset=off + desc_len, order=order)
        arr.flags.writeable = False
        return arr

    def _parse(
        self, buf: memoryview, off: int, size: int
    ) -> tuple[int, np.dtype[Any] | None, tuple[int, ...], Literal["C", "F"]]:
        """Return (descriptor length, dtype, shape, order) of the item of ``size`` bytes at
        ``off``; the dtype is None for bytes.

        Every field is checked against ``size`` before anything is allocated, so a corrupt
        or forged descriptor can neither allocate more than the item holds nor read past it.

        Raises:
            ValueError: What is wrong with the descriptor.
        """
        if size < _RAW_HEAD.size:
            raise ValueError(f"{size} bytes cannot hold a descriptor")
        desc_len, kind, _, _ = _RAW_HEAD.unpack_from(buf, off)
        if not _RAW_HEAD.size <= desc_len <= size or desc_len % _PAD:
            raise ValueError(f"descriptor length {desc_len} does not fit an item of {size} bytes")
        if kind == _BYTES:
            return desc_len, None, (size - desc_len,), "C"
        key = bytes(buf[off : off + desc_len])
        parsed = self._dec.get(key)
        if parsed is None:
            parsed = _parse_descriptor(key)  # a bad one raises and is not cached
            if len(self._dec) > 256:
                self._dec.clear()
            self._dec[key] = parsed
        dtype, shape, order, nbytes = parsed
        if nbytes != size - desc_len:
            raise ValueError(
                f"shape {shape} of {dtype} needs {nbytes} bytes of data, the item has "
                f"{size - desc_len} after its {desc_len}-byte descriptor"
            )
        return desc_len, dtype, shape, order

    def decode(self, data: bytearray) -> Any:
        """Return the item whose slot bytes (descriptor and data) the core copied into ``data``.

        An array is built on ``data`` itself: no second copy, and it is writable.

        Raises:
            ValueError: The item's descriptor does not fit its bytes; the item was consumed.
        """
        size = len(data)
        try:
            desc_len, dtype, shape, order = self._parse(data, 0, size)  # type: ignore[arg-type]
        except ValueError as exc:
            raise _Undecodable(size, str(exc)).error(self._label) from None
        if dtype is None:
            return bytes(memoryview(data)[desc_len:])
        return np.ndarray(shape, dtype, buffer=data, offset=desc_len, order=order)


class _Undecodable:
    """A raw item taken from the queue whose descriptor cannot be decoded, and why."""

    __slots__ = ("reason", "size")

    def __init__(self, size: int, reason: str) -> None:
        self.size = size
        self.reason = reason

    def error(self, label: str) -> ValueError:
        return ValueError(
            f"raw item of {self.size} bytes from queue {label} cannot be decoded: "
            f"{self.reason}; the item was taken off the queue"
        )


# numpy's limit on an array's dimensions (NPY_MAXDIMS): 32 before numpy 2.0, 64 since.
_MAXDIMS: Final = 64 if np.lib.NumpyVersion(np.__version__) >= "2.0.0" else 32


def _parse_descriptor(
    desc: bytes,
) -> tuple[np.dtype[Any], tuple[int, ...], Literal["C", "F"], int]:
    """Return (dtype, shape, order, data bytes) of an array's descriptor.

    Raises:
        ValueError: What is wrong with the descriptor.
    """
    desc_len, kind, order, ndim = _RAW_HEAD.unpack_from(desc, 0)
    if kind != _ARRAY:
        raise ValueError(f"unknown item kind {kind}")
    if order not in (_C, _F):
        raise ValueError(f"unknown memory order {order}")
    if ndim > _MAXDIMS:
        raise ValueError(f"{ndim} dimensions, more than numpy's {_MAXDIMS}")
    end = _RAW_HEAD.size + 8 * ndim
    if end > desc_len:
        raise ValueError(f"a descriptor of {desc_len} bytes cannot hold {ndim} dimensions")
    shape = struct.unpack_from(f"<{ndim}q", desc, _RAW_HEAD.size)
    if min(shape, default=0) < 0:
        raise ValueError(f"negative dimension in shape {shape}")
    text = desc[end:].rstrip(b"\0")
    try:
        dtype = dtype_from_bytes(text)
    except Exception as exc:  # literal_eval and descr_to_dtype raise several kinds
        raise ValueError(f"unreadable dtype {text[:80]!r} ({type(exc).__name__})") from None
    if dtype.hasobject:  # raw bytes are no object pointers
        raise ValueError(f"dtype {dtype} holds Python objects")
    count = math.prod(shape)
    if count > sys.maxsize:
        raise ValueError(f"shape {shape} has more elements than an array can")
    return dtype, shape, "F" if order == _F else "C", count * dtype.itemsize
