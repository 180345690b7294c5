"""numpy raw mode, typed slots, and numpy arrays inside pickled objects.

Raw queues (``raw=True``) carry ndarrays and bytes-like objects as their bytes behind a small
descriptor and never pickle; typed queues (``dtype=``, ``shape=``) fix every item's dtype and
shape and derive item_size from them. In the default pickle mode, arrays inside objects travel
as protocol-5 out-of-band buffers. Cross-process tests run under fork and spawn, with child
targets in ``_raw_children.py``; every wait is bounded.
"""

from __future__ import annotations

import itertools
import math
import os
import pickle
import re
import signal
import struct
import threading
import time
from collections.abc import Callable, Iterator
from multiprocessing.context import BaseContext
from typing import Any

import _raw_children as rc
import cloudpickle
import numpy as np
import pytest
from _support import TIMEOUT, ctx_fixture, recv, remove_queue, running, wait_blocked

from shared_queue import Full, SharedMemoryQueue, _serialize
from shared_queue._segment import SHM_DIR, base_name

pytestmark = pytest.mark.timeout(60)

MakeQueue = Callable[..., SharedMemoryQueue]

STRUCT = np.dtype(
    [
        ("id", "<i4"),
        ("pos", "<f4", (3,)),
        ("inner", [("flag", "u1"), ("vec", ">f8", (2,))]),  # nested, with a subarray
        ("be", ">f8"),  # non-native byte order
    ]
)
DTYPES = [
    np.dtype(np.bool_),
    np.dtype(np.int8),
    np.dtype(np.uint16),
    np.dtype(np.int64),
    np.dtype(">i4"),
    np.dtype(np.float16),
    np.dtype(np.float32),
    np.dtype(np.float64),
    np.dtype(np.complex64),
    np.dtype(np.complex128),
    STRUCT,
    np.dtype("M8[ns]"),
]
SHAPES = [(), (0,), (3,), (2, 3, 4), (0, 5)]
ORDERS = ["C", "F", "strided"]
MATRIX = [
    pytest.param(dt, shape, order, id=f"{dt.str if dt.names is None else 'struct'}-{shape}-{order}")
    for dt in DTYPES
    for shape in SHAPES
    for order in ORDERS
    if not (order == "strided" and shape == ())  # a 0-d array is always contiguous
]


# -- helpers --------------------------------------------------------------------------------


def _max_dims() -> int:
    """The most dimensions the installed numpy allows: 32 before numpy 2.0, 64 from it."""
    try:
        np.empty((1,) * 64)
    except ValueError:
        return 32
    return 64


MAX_DIMS = _max_dims()


def esc(text: object) -> str:
    return re.escape(str(text))


def values(dtype: np.dtype[Any], shape: tuple[int, ...], seed: int = 0) -> np.ndarray[Any, Any]:
    """A C-ordered array of ``dtype`` and ``shape`` with varied values (NaN/inf/NaT where the
    dtype has them)."""
    size = math.prod(shape)
    n = np.arange(size, dtype=np.int64)
    kind = dtype.kind
    if kind == "b":
        flat = n % 3 == 0
    elif kind in "iu":
        flat = (n * 7919 - 3 + seed).astype(dtype)
    elif kind == "f":
        flat = np.linspace(-3.0, 3.0 + seed, size).astype(dtype)
        flat[:1] = np.nan
        flat[1:2] = np.inf
    elif kind == "c":
        flat = (np.linspace(-3.0, 3.0, size) + 1j * np.linspace(5.0, -5.0 + seed, size)).astype(
            dtype
        )
        flat[:1] = complex(np.nan, 1.0)
    elif kind == "M":
        flat = (n * 1_000_003 + seed).astype(dtype)
        flat[:1] = np.datetime64("NaT", np.datetime_data(dtype)[0])  # a unit: numpy >= 2.5
    else:
        rng = np.random.default_rng(seed)
        flat = np.zeros(size, dtype)
        flat.view(np.uint8)[:] = rng.integers(0, 256, size * dtype.itemsize, dtype=np.uint8)
    return np.asarray(flat, dtype).reshape(shape)


def laid_out(arr: np.ndarray[Any, Any], order: str) -> np.ndarray[Any, Any]:
    """``arr`` in C order, Fortran order, or as a non-contiguous ``[::2]`` view."""
    if order == "C":
        out = np.ascontiguousarray(arr)
    elif order == "F":
        out = np.asfortranarray(arr)
        if arr.ndim > 1 and arr.size > 1:
            assert not out.flags.c_contiguous
    else:
        base = np.zeros((2 * arr.shape[0], *arr.shape[1:]), arr.dtype)
        base[::2] = arr
        out = base[::2]
        if arr.size > 1:
            assert not (out.flags.c_contiguous or out.flags.f_contiguous)
    return out


def assert_same_array(got: Any, want: np.ndarray[Any, Any]) -> None:
    """``got`` is a plain ndarray equal to ``want`` in dtype, shape and every bit, and owns
    writable memory of its own."""
    assert type(got) is np.ndarray, type(got)
    assert got.dtype == want.dtype and got.dtype.descr == want.dtype.descr, (got.dtype, want.dtype)
    assert got.shape == want.shape
    assert got.tobytes() == want.tobytes()
    if want.dtype.names is None:
        assert np.array_equal(got, want, equal_nan=want.dtype.kind in "fcM")
    # Memory of its own: a get copies the item once, into a private buffer (a bytearray that
    # only this array refers to) that the array is built on, never a view of the queue.
    assert got.flags.owndata or type(got.base) is bytearray, "a view, not an array of its own"
    assert got.flags.writeable
    assert got.flags.c_contiguous or got.flags.f_contiguous


def unchanged(q: SharedMemoryQueue, before: dict[str, Any]) -> None:
    """The queue's size and counters are as in ``before`` (a get_metrics() snapshot)."""
    after = q.get_metrics()
    keys = ("queue_size", "total_puts", "total_gets", "bytes_in", "bytes_out")
    assert {k: after[k] for k in keys} == {k: before[k] for k in keys}


def still_works(q: SharedMemoryQueue, item: np.ndarray[Any, Any], queued: list[Any]) -> None:
    """Put ``item`` and get everything: ``queued`` first, then ``item``."""
    q.put(item, timeout=TIMEOUT)
    for want in [*queued, item]:
        got = q.get(timeout=TIMEOUT)
        assert_same_array(got, np.asarray(want))
    assert q.empty()


@pytest.fixture
def new_queue(qname: str) -> Iterator[MakeQueue]:
    """Factory for queues named ``qname + suffix``; closed and removed afterwards."""
    made: list[SharedMemoryQueue] = []

    def make(suffix: str = "", **kwargs: Any) -> SharedMemoryQueue:
        kwargs.setdefault("create", True)
        q = SharedMemoryQueue(qname + suffix, **kwargs)
        made.append(q)
        return q

    yield make
    for q in made:
        q.close()
    for name in {q.name for q in made}:
        remove_queue(name)


# -- round trips ----------------------------------------------------------------------------


@pytest.mark.parametrize(("dtype", "shape", "order"), MATRIX)
def test_array_round_trip(
    new_queue: MakeQueue, dtype: np.dtype[Any], shape: tuple[int, ...], order: str
) -> None:
    """Every dtype, shape and layout comes back equal, as an array of its own."""
    q = new_queue(raw=True, capacity=2, item_size=4096)
    arr = laid_out(values(dtype, shape), order)
    q.put(arr, timeout=TIMEOUT)
    got = q.get(timeout=TIMEOUT)
    assert_same_array(got, arr)
    q.put_nowait(arr)
    assert_same_array(q.get_nowait(), arr)
    assert q.empty()


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda dt: dt.str if dt.names is None else "struct")
def test_array_batches(new_queue: MakeQueue, dtype: np.dtype[Any]) -> None:
    """put_batch of arrays of every shape and layout; get_batch returns them in order."""
    arrays = [
        laid_out(values(dtype, s, seed=i), o)
        for i, (s, o) in enumerate(
            (s, o) for s in SHAPES for o in ORDERS if not (o == "strided" and s == ())
        )
    ]
    q = new_queue(raw=True, capacity=len(arrays), item_size=4096)
    q.put_batch(arrays, timeout=TIMEOUT)
    assert q.full()
    got = q.get_batch(len(arrays) + 5, timeout=TIMEOUT)
    assert isinstance(got, list) and len(got) == len(arrays)
    for g, a in zip(got, arrays, strict=True):
        assert_same_array(g, a)
    assert q.empty()


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda: np.arange(10.0)[::-1], id="reversed"),
        pytest.param(lambda: np.arange(24).reshape(2, 3, 4).transpose(1, 0, 2), id="transposed"),
        pytest.param(lambda: np.broadcast_to(np.arange(3, dtype="f4"), (4, 3)), id="broadcast"),
        pytest.param(lambda: np.ones((3, 1), ">c16")[:, ::1], id="big-endian-complex"),
        pytest.param(lambda: np.array(["a", "bcd", ""], "U3"), id="unicode"),
        pytest.param(lambda: np.array([b"ab", b"\0\xff"], "S4"), id="bytes-dtype"),
        pytest.param(
            lambda: np.zeros(3, np.dtype([("a", "i1"), ("b", "<i4")], align=True)), id="aligned"
        ),
        pytest.param(lambda: np.arange(2.0).reshape((1,) * 9 + (2,)), id="10-dims"),
        pytest.param(lambda: np.zeros((1,) * (MAX_DIMS - 1) + (2,), "<u2"), id="max-dims"),
        pytest.param(
            lambda: np.frombuffer(bytes(range(17)), "<f8", count=2, offset=1), id="unaligned"
        ),
        pytest.param(lambda: np.zeros((2, 2), "M8")[:, :1], id="generic-datetime"),
        pytest.param(lambda: np.asfortranarray(np.arange(6.0).reshape(2, 3))[:, 1:], id="F-view"),
    ],
)
def test_other_layouts(new_queue: MakeQueue, make: Callable[[], np.ndarray[Any, Any]]) -> None:
    """Negative and zero strides, read-only input, other dtypes, many dimensions."""
    q = new_queue(raw=True, capacity=2, item_size=4096)
    arr = make()
    q.put(arr, timeout=TIMEOUT)
    assert_same_array(q.get(timeout=TIMEOUT), arr)


def test_result_is_not_a_view_of_the_slot(new_queue: MakeQueue) -> None:
    """An array got from a one-slot queue keeps its values when the slot is reused, and
    writing into it changes nothing in the queue."""
    q = new_queue(raw=True, capacity=1, item_size=4096)
    first = np.arange(100, dtype=np.int64)
    q.put(first, timeout=TIMEOUT)
    got = q.get(timeout=TIMEOUT)
    q.put(np.full(100, -1, np.int64), timeout=TIMEOUT)  # the same slot
    assert_same_array(got, first)
    got[:] = 7
    assert_same_array(q.get(timeout=TIMEOUT), np.full(100, -1, np.int64))


@pytest.mark.parametrize(
    ("item", "want"),
    [
        pytest.param(b"abc\0def", b"abc\0def", id="bytes"),
        pytest.param(b"", b"", id="empty"),
        pytest.param(bytearray(b"xyz"), b"xyz", id="bytearray"),
        pytest.param(memoryview(b"abcdefgh")[1:5], b"bcde", id="memoryview"),
        pytest.param(memoryview(b"abcdefgh")[::3], b"adg", id="memoryview-strided"),
        pytest.param(
            memoryview(np.arange(6.0).reshape(2, 3)),
            np.arange(6.0).tobytes(),
            id="memoryview-2d-float",
        ),
    ],
)
def test_bytes_like_comes_back_as_bytes(new_queue: MakeQueue, item: Any, want: bytes) -> None:
    q = new_queue(raw=True, capacity=4, item_size=256)
    q.put(item, timeout=TIMEOUT)
    q.put_batch([item, np.arange(3)], timeout=TIMEOUT)
    got = q.get(timeout=TIMEOUT)
    assert type(got) is bytes and got == want
    a, b = q.get_batch(2, timeout=TIMEOUT)
    assert type(a) is bytes and a == want
    assert_same_array(b, np.arange(3))


def test_raw_mode_never_pickles(new_queue: MakeQueue, monkeypatch: pytest.MonkeyPatch) -> None:
    """With every pickling entry point of the serializer made to raise, a raw queue still
    moves arrays and bytes; a pickle-mode queue shows that the patches bite."""
    plain = new_queue("-pickle", capacity=4, item_size=4096)
    plain.put({"queued": "before the patch"}, timeout=TIMEOUT)
    q = new_queue(raw=True, capacity=len(DTYPES) + 1, item_size=4096)

    def boom(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("raw mode called a pickler")

    for module in (_serialize.pickle, pickle):
        for attr in ("dumps", "loads", "Pickler", "Unpickler", "load", "dump"):
            monkeypatch.setattr(module, attr, boom)
    for attr in ("dumps", "loads", "CloudPickler", "Pickler"):
        monkeypatch.setattr(_serialize.cloudpickle, attr, boom)
    monkeypatch.setattr(cloudpickle, "dumps", boom)

    arrays = [values(dt, (2, 3)) for dt in DTYPES]
    for a in arrays:
        q.put(a, timeout=TIMEOUT)
    q.put(b"bytes too", timeout=TIMEOUT)
    for a in arrays:
        assert_same_array(q.get(timeout=TIMEOUT), a)
    assert q.get(timeout=TIMEOUT) == b"bytes too"
    q.put_batch([arrays[0], bytearray(b"x")], timeout=TIMEOUT)
    got = q.get_batch(2, timeout=TIMEOUT)
    assert_same_array(got[0], arrays[0])
    assert got[1] == b"x"

    with pytest.raises(TypeError, match="cannot be pickled"):
        plain.put({"a": 1}, timeout=TIMEOUT)
    with pytest.raises(pickle.UnpicklingError):
        plain.get(timeout=TIMEOUT)


# -- what a raw queue refuses -----------------------------------------------------------------

_NOT_ARRAY = (
    r"takes numpy arrays and bytes-like objects, not {} "
    r"\(create the queue without raw=True to pickle objects\)"
)
_OBJECTS = (
    r"cannot send arrays of dtype {} \(it holds Python objects\); use a queue without raw=True"
)


@pytest.mark.parametrize(
    ("item", "message"),
    [
        pytest.param([1.0, 2.0], _NOT_ARRAY.format("list"), id="list"),
        pytest.param("text", _NOT_ARRAY.format("str"), id="str"),
        pytest.param(None, _NOT_ARRAY.format("NoneType"), id="None"),
        pytest.param(3.5, _NOT_ARRAY.format("float"), id="float"),
        pytest.param(np.float32(1.5), _NOT_ARRAY.format("float32"), id="numpy-scalar"),
        pytest.param({"a": np.zeros(2)}, _NOT_ARRAY.format("dict"), id="dict-of-arrays"),
        pytest.param(np.array([1, "x", None], dtype=object), _OBJECTS.format("object"), id="O"),
        pytest.param(
            np.zeros(2, [("a", "O"), ("b", "<f8")]),
            _OBJECTS.format(esc(np.dtype([("a", "O"), ("b", "<f8")]))),
            id="struct-with-O",
        ),
    ],
)
def test_type_error_leaves_queue_unchanged(
    new_queue: MakeQueue, qname: str, item: Any, message: str
) -> None:
    """Objects and object arrays raise TypeError naming the queue, through put, put_nowait and
    put_batch; nothing is put, and the queue works on."""
    q = new_queue(raw=True, capacity=4, item_size=4096)
    queued = np.arange(5.0)
    q.put(queued, timeout=TIMEOUT)
    before = q.get_metrics()
    pattern = rf"^raw queue '{esc(qname)}' {message}$"
    with pytest.raises(TypeError, match=pattern):
        q.put(item, timeout=TIMEOUT)
    with pytest.raises(TypeError, match=pattern):
        q.put_nowait(item)
    with pytest.raises(TypeError, match=pattern):
        q.put_batch([np.ones(2), item, np.ones(3)], timeout=TIMEOUT)
    unchanged(q, before)
    assert q.qsize() == 1
    still_works(q, np.arange(3, dtype=np.int8), [queued])


def test_oversize_raw_items(new_queue: MakeQueue, qname: str) -> None:
    """An item one byte over item_size raises ValueError naming the sizes; one that exactly
    fits goes through; a failing put or batch leaves the queue unchanged."""
    data_room = 128
    q = new_queue(raw=True, capacity=4, item_size=64 + data_room)  # bytes: a 64-byte descriptor
    q.put(b"x" * data_room, timeout=TIMEOUT)
    assert q.get(timeout=TIMEOUT) == b"x" * data_room
    q.put(b"queued", timeout=TIMEOUT)
    before = q.get_metrics()

    def pattern(size: int) -> str:
        return (
            rf"^item of {size} bytes exceeds item_size={q.item_size} of queue '{esc(qname)}' "
            r"\(create it with a larger item_size\)$"
        )

    with pytest.raises(ValueError, match=pattern(q.item_size + 1)):
        q.put(b"x" * (data_room + 1), timeout=TIMEOUT)
    big = np.zeros(data_room // 8 + 1, np.float64)
    size = len(_serialize.descriptor(big.dtype, big.shape)) + big.nbytes
    assert size > q.item_size
    with pytest.raises(ValueError, match=pattern(size)):
        q.put(big, timeout=TIMEOUT)
    with pytest.raises(ValueError, match=pattern(size)):
        q.put_batch([np.zeros(1), big], timeout=TIMEOUT)
    unchanged(q, before)
    fits = np.zeros((q.item_size - len(_serialize.descriptor(big.dtype, (1,)))) // 8)
    q.put(fits, timeout=TIMEOUT)
    assert q.get(timeout=TIMEOUT) == b"queued"
    assert_same_array(q.get(timeout=TIMEOUT), fits)


# -- typed slots ------------------------------------------------------------------------------


def test_typed_item_size_and_capacity(new_queue: MakeQueue) -> None:
    """item_size is the descriptor plus the array bytes; capacity arrays of exactly that type
    fit, in any layout, and come back in order."""
    shape = (480, 640, 3)
    q = new_queue(capacity=8, dtype=np.float32, shape=shape)
    nbytes = 4 * math.prod(shape)
    assert (q.raw, q.dtype, q.shape) == (True, np.dtype(np.float32), shape)
    assert q.item_size == len(_serialize.descriptor(np.dtype(np.float32), shape)) + nbytes
    assert 0 < q.item_size - nbytes <= 128 and (q.item_size - nbytes) % 64 == 0
    frames = []
    for i in range(q.capacity):
        frame = np.full(shape, i, np.float32)
        frame[i, i, :] = [np.nan, -np.inf, i / 7]
        frames.append(laid_out(frame, ORDERS[i % 3]))
    for frame in frames:
        q.put_nowait(frame)
    assert q.full()
    with pytest.raises(Full):
        q.put_nowait(frames[0])
    assert q.get_metrics()["bytes_in"] == q.capacity * q.item_size
    for frame in frames:
        assert_same_array(q.get_nowait(), frame)
    assert q.empty()


def test_typed_shape_as_int_and_zero_size(new_queue: MakeQueue) -> None:
    q = new_queue("-int", capacity=2, dtype="<i2", shape=5)
    assert (q.dtype, q.shape) == (np.dtype("<i2"), (5,))
    q.put(np.arange(5, dtype="<i2"), timeout=TIMEOUT)
    assert_same_array(q.get(timeout=TIMEOUT), np.arange(5, dtype="<i2"))
    empty = new_queue("-empty", capacity=2, dtype=STRUCT, shape=(0, 3))
    assert empty.item_size == len(_serialize.descriptor(STRUCT, (0, 3)))
    empty.put(np.zeros((0, 3), STRUCT), timeout=TIMEOUT)
    assert_same_array(empty.get(timeout=TIMEOUT), np.zeros((0, 3), STRUCT))
    scalar = new_queue("-scalar", capacity=2, dtype=STRUCT, shape=())
    one = values(STRUCT, ())
    scalar.put(one, timeout=TIMEOUT)
    assert_same_array(scalar.get(timeout=TIMEOUT), one)


_MISMATCH = (
    "^array of {} with shape {} does not match typed queue '{}' \\(float32 of shape \\(4, 5\\)\\); "
    "convert it first, nothing is cast$"
)


@pytest.mark.parametrize(
    ("item", "error", "message"),
    [
        pytest.param(np.zeros((4, 5)), ValueError, ("float64", "(4, 5)"), id="float64"),
        pytest.param(np.zeros((4, 5), ">f4"), ValueError, (">f4", "(4, 5)"), id="big-endian"),
        pytest.param(np.zeros((4, 5), np.int32), ValueError, ("int32", "(4, 5)"), id="int32"),
        pytest.param(np.zeros((4, 5), np.float16), ValueError, ("float16", "(4, 5)"), id="f16"),
        pytest.param(np.zeros((5, 4), np.float32), ValueError, ("float32", "(5, 4)"), id="5x4"),
        pytest.param(np.zeros((1, 4, 5), "f4"), ValueError, ("float32", "(1, 4, 5)"), id="1x4x5"),
        pytest.param(np.zeros(20, np.float32), ValueError, ("float32", "(20,)"), id="flat"),
        pytest.param(np.float32(0), TypeError, "float32", id="numpy-scalar"),
        pytest.param(np.zeros((4, 5), "f4").tobytes(), TypeError, "bytes", id="bytes"),
        pytest.param(bytearray(80), TypeError, "bytearray", id="bytearray"),
        pytest.param(memoryview(np.zeros((4, 5), "f4")), TypeError, "memoryview", id="mview"),
    ],
)
def test_typed_mismatch_is_refused(
    new_queue: MakeQueue, qname: str, item: Any, error: type[Exception], message: Any
) -> None:
    """Another dtype (also one a cast would fit), another shape with the same byte count, or
    bytes: refused with nothing cast and nothing put."""
    q = new_queue(capacity=2, dtype=np.float32, shape=(4, 5))
    queued = values(np.dtype(np.float32), (4, 5))
    q.put(queued, timeout=TIMEOUT)
    before = q.get_metrics()
    if error is ValueError:
        pattern = _MISMATCH.format(esc(message[0]), esc(message[1]), esc(qname))
    elif message in ("bytes", "bytearray", "memoryview"):
        pattern = (
            rf"^typed queue '{esc(qname)}' takes float32 of shape \(4, 5\) arrays, "
            rf"not {message}$"
        )
    else:
        pattern = rf"^raw queue '{esc(qname)}' {_NOT_ARRAY.format(message)}$"
    with pytest.raises(error, match=pattern):
        q.put(item, timeout=TIMEOUT)
    with pytest.raises(error, match=pattern):
        q.put_batch([np.zeros((4, 5), np.float32), item], timeout=TIMEOUT)
    unchanged(q, before)
    still_works(q, values(np.dtype(np.float32), (4, 5), seed=1), [queued])


def test_typed_constructor_errors(qname: str) -> None:
    path = os.path.join(SHM_DIR, base_name(qname, ""))
    both = rf"^typed queue '{esc(qname)}' needs both dtype and shape$"
    with pytest.raises(ValueError, match=both):
        SharedMemoryQueue(qname, create=True, dtype=np.float32)
    with pytest.raises(ValueError, match=both):
        SharedMemoryQueue(qname, create=True, raw=True, shape=(2, 2))
    with pytest.raises(TypeError, match=rf"^typed queue '{esc(qname)}' cannot hold dtype object"):
        SharedMemoryQueue(qname, create=True, dtype=object, shape=(2,))
    assert not os.path.exists(path)


def test_typed_subarray_dtype_folds_into_the_shape(qname: str) -> None:
    """A subarray dtype folds into the shape, as in np.zeros((3,), ('f4', (2,))); it must not
    turn into raw void bytes."""
    q = SharedMemoryQueue(qname, create=True, capacity=2, dtype=("f4", (2,)), shape=(3,))
    with q:
        assert (q.dtype, q.shape) == (np.dtype("f4"), (3, 2))
        q.put(np.ones((3, 2), "f4"), timeout=TIMEOUT)
        assert_same_array(q.get(timeout=TIMEOUT), np.ones((3, 2), "f4"))


# -- the raw flag and the slot type travel with the queue ------------------------------------


def test_attached_and_pickled_handles_are_raw(new_queue: MakeQueue) -> None:
    """A handle attached by name, an unpickled handle and one passed through another queue
    learn raw, dtype and shape from the segment, and act on them."""
    untyped = new_queue("-raw", raw=True, capacity=4, item_size=1024)
    typed = new_queue("-typed", capacity=4, dtype=">u2", shape=(2, 3))
    plain = new_queue("-plain", capacity=4, item_size=1024)
    expect = {
        untyped.name: (True, None, None),
        typed.name: (True, np.dtype(">u2"), (2, 3)),
        plain.name: (False, None, None),
    }
    for q in (untyped, typed, plain):
        assert (q.raw, q.dtype, q.shape) == expect[q.name]
        plain.put(q, timeout=TIMEOUT)
        via_queue = plain.get(timeout=TIMEOUT)
        for other in (SharedMemoryQueue(q.name), pickle.loads(pickle.dumps(q)), via_queue):
            with other:
                assert other is not q
                assert (other.raw, other.dtype, other.shape) == expect[q.name]
                assert (other.capacity, other.item_size) == (q.capacity, q.item_size)
                if q is plain:
                    continue
                arr = values(np.dtype(">u2"), (2, 3))
                other.put(arr, timeout=TIMEOUT)
                assert_same_array(q.get(timeout=TIMEOUT), arr)
                with pytest.raises(TypeError, match=r"^raw queue"):
                    other.put(["not", "an", "array"], timeout=TIMEOUT)
                if q is typed:
                    with pytest.raises(ValueError, match=r"does not match typed queue"):
                        other.put(arr.astype("<u2"), timeout=TIMEOUT)
                    with pytest.raises(TypeError, match=r"^typed queue"):
                        other.put(arr.tobytes(), timeout=TIMEOUT)
                assert q.empty()


# -- across processes -----------------------------------------------------------------------

N_STREAM = 50


ctx = ctx_fixture("fork", "spawn")


def test_array_stream_from_child(ctx: BaseContext, new_queue: MakeQueue) -> None:
    """A child puts float32 arrays of random shapes and layouts into a small ring; each
    arrives with the shape, dtype and sha256 the child sent beside it."""
    q = new_queue(raw=True, capacity=4, item_size=64 + 4 * 16**3)
    out, sums = ctx.Queue(), ctx.Queue()
    seed = 1234
    with running(ctx, (rc.produce_arrays, (q, out, sums, N_STREAM, seed))) as procs:
        assert recv(out.get, procs) == (True, None, None, q.item_size)
        rng = np.random.default_rng(seed)
        for i in range(N_STREAM):
            got = recv(q.get, procs)
            index, shape, dtype, sha = recv(sums.get, procs)
            assert index == i
            assert (got.shape, got.dtype.str, rc.digest(got)) == (shape, dtype, sha)
            assert_same_array(got, rc.stream_array(rng))
    assert q.empty()


def test_array_stream_to_child(ctx: BaseContext, new_queue: MakeQueue) -> None:
    """The parent puts the stream; a child that attached by name checks every array."""
    q = new_queue(raw=True, capacity=4, item_size=64 + 4 * 16**3)
    out, sums = ctx.Queue(), ctx.Queue()
    rng = np.random.default_rng(99)
    with running(ctx, (rc.consume_arrays, (q.name, out, sums, N_STREAM))) as procs:
        for i in range(N_STREAM):
            arr = rc.stream_array(rng)
            sums.put((i, *rc.describe(arr)))
            recv(lambda timeout, arr=arr: q.put(arr, timeout=timeout), procs)
        what, n, mismatches = recv(out.get, procs)
    assert what == (True, None, None, q.item_size)
    assert (n, mismatches) == (N_STREAM, [])
    assert q.empty()


def test_typed_frames_from_child(ctx: BaseContext, new_queue: MakeQueue) -> None:
    """A child attaches by name to a typed (64, 64, 3) uint8 queue, learns its type, and
    streams frames."""
    q = new_queue(capacity=4, dtype=np.uint8, shape=(64, 64, 3))
    out, sums = ctx.Queue(), ctx.Queue()
    seed = 7
    with running(ctx, (rc.produce_frames, (q.name, out, sums, N_STREAM, seed))) as procs:
        assert recv(out.get, procs) == (True, "|u1", (64, 64, 3), q.item_size)
        rng = np.random.default_rng(seed)
        for i in range(N_STREAM):
            got = recv(q.get, procs)
            assert recv(sums.get, procs) == (i, *rc.describe(got))
            assert_same_array(got, rng.integers(0, 256, size=(64, 64, 3), dtype=np.uint8))
    metrics = q.get_metrics()
    assert metrics["total_gets"] == N_STREAM and metrics["bytes_out"] == N_STREAM * q.item_size


# -- pickle mode: arrays inside objects -------------------------------------------------------


def assert_same_in_object(got: Any, want: np.ndarray[Any, Any]) -> None:
    """An array out of a pickled object: equal in dtype, shape and bits, and writable."""
    assert type(got) is np.ndarray
    assert got.dtype == want.dtype and got.shape == want.shape
    assert got.tobytes() == want.tobytes()
    assert got.flags.writeable
    assert got.flags.aligned


def test_pickle_mode_dict_of_arrays(new_queue: MakeQueue) -> None:
    """Arrays of every dtype and layout in a dict come back equal and writable.

    Left out: a non-contiguous array of a non-native scalar dtype ('>i4' strided), which
    numpy pickles in band and unpickles with the native dtype, values kept (joblib#280); the
    same happens with plain pickle, so it is numpy's behaviour, not the queue's.
    """
    q = new_queue(capacity=4, item_size=1 << 16)
    read_only = np.arange(6.0)
    read_only.flags.writeable = False
    item = {
        f"{dt.str}-{o}": laid_out(values(dt, (2, 3, 4)), o)
        for dt in DTYPES
        for o in ORDERS
        if not (o == "strided" and dt.names is None and not dt.isnative)
    }
    item |= {"0-d": np.array(2.5), "empty": np.zeros((0, 5)), "read-only-strided": read_only[::2]}
    q.put(item, timeout=TIMEOUT)
    got = q.get(timeout=TIMEOUT)
    assert type(got) is dict and got.keys() == item.keys()
    for key, want in item.items():
        assert_same_in_object(got[key], want)
        got[key][...] = want.flat[0] if want.size else 0  # writable in fact, not only by flag
    assert not read_only.flags.writeable


@pytest.mark.parametrize("size", [6, 1 << 17], ids=["small", "1MiB"])
def test_pickle_mode_read_only_array_stays_read_only(new_queue: MakeQueue, size: int) -> None:
    """A read-only array inside an object arrives read-only: protocol 5 marks its out-of-band
    buffer READONLY_BUFFER (documented in docs/raw-mode.md); writable ones arrive writable."""
    q = new_queue(capacity=2, item_size=2 << 20)
    read_only = np.frombuffer(np.arange(size, dtype=np.float64).tobytes(), np.float64)
    assert not read_only.flags.writeable
    q.put({"meta": 1, "a": read_only}, timeout=TIMEOUT)
    got = q.get(timeout=TIMEOUT)["a"]
    np.testing.assert_array_equal(got, read_only)
    assert not got.flags.writeable


def test_pickle_mode_meta_array_tuples(new_queue: MakeQueue) -> None:
    """(meta, array) tuples by put_batch and get_batch; items share no memory."""
    q = new_queue(capacity=8, item_size=8192)
    items = [
        ({"frame": i, "dtype": dt.str}, values(dt, (4, 5), seed=i))
        for i, dt in enumerate(DTYPES[:6])
    ]
    q.put_batch(items, timeout=TIMEOUT)
    got = q.get_batch(len(items), timeout=TIMEOUT)
    assert [m for m, _ in got] == [m for m, _ in items]
    for (_, g), (_, want) in zip(got, items, strict=True):
        assert_same_in_object(g, want)
    for (_, a), (_, b) in itertools.pairwise(got):
        assert not np.shares_memory(a, b)


def test_pickle_mode_lambda_next_to_arrays(new_queue: MakeQueue) -> None:
    """A lambda forces cloudpickle; the arrays beside it still arrive, writable."""
    q = new_queue(capacity=2, item_size=8192)
    arr = values(np.dtype(np.float64), (3, 4))
    q.put((lambda a: a * 2, arr, {"b": np.asfortranarray(arr)}), timeout=TIMEOUT)
    f, a, d = q.get(timeout=TIMEOUT)
    assert_same_in_object(a, arr)
    assert_same_in_object(d["b"], arr)
    np.testing.assert_array_equal(f(a), arr * 2)


_OOB_HEAD = struct.Struct("<BxxxIQ")  # marker 0, buffer count, pickle length (see _serialize)


def _pad64(n: int) -> int:
    return -(-n // 64) * 64


@pytest.mark.parametrize("with_lambda", [False, True], ids=["pickle", "cloudpickle"])
def test_pickle_mode_large_array_goes_out_of_band(new_queue: MakeQueue, with_lambda: bool) -> None:
    """A 1 MiB array in a dict is written after a short pickle as an out-of-band buffer (read
    back from the slot in the documented blob format), not inside the pickle."""
    q = new_queue(capacity=2, item_size=2 << 20)
    big = np.random.default_rng(5).random(1 << 17)  # 1 MiB of float64
    item: dict[str, Any] = {"meta": "frame", "big": big}
    if with_lambda:
        item["f"] = lambda x: x + 1
    q.put(item, timeout=TIMEOUT)

    assert q._seg is not None
    slot = q._seg.slots[0]
    blob = slot["blob"][: int(slot["length"])].tobytes()
    marker, n, pickle_len = _OOB_HEAD.unpack_from(blob)
    assert (marker, n) == (0, 1), "not framed as a pickle with out-of-band buffers"
    assert pickle_len < 4096, f"pickle of {pickle_len} bytes: the array went in band"
    (length,) = struct.unpack_from("<Q", blob, _OOB_HEAD.size)
    assert length == big.nbytes
    start = _pad64(_pad64(_OOB_HEAD.size + 8) + pickle_len)
    assert blob[start:] == big.tobytes()
    bytes_in = q.get_metrics()["bytes_in"]
    assert big.nbytes < bytes_in == len(blob) < big.nbytes + 4096

    got = q.get(timeout=TIMEOUT)
    assert got["meta"] == "frame"
    assert_same_in_object(got["big"], big)
    got["big"][:] = 0
    if with_lambda:
        assert got["f"](1) == 2


# -- found while testing --------------------------------------------------------------------


class _Interrupt(Exception):
    pass


def test_signal_handler_exception_interrupts_blocked_get(new_queue: MakeQueue) -> None:
    """A handler that raises (SystemExit from a SIGTERM handler, pytest-timeout's failure)
    must end a blocked get, as it ends time.sleep or queue.Queue.get."""
    q = new_queue(raw=True, capacity=2, item_size=256)

    def handler(signum: int, frame: Any) -> None:
        raise _Interrupt(signum)

    main = threading.get_ident()
    sent: list[float] = []

    def interrupt_once_blocked() -> None:
        wait_blocked(q, timeout=10.0)
        sent.append(time.monotonic())
        signal.pthread_kill(main, signal.SIGUSR1)

    old = signal.signal(signal.SIGUSR1, handler)
    sender = threading.Thread(target=interrupt_once_blocked)
    sender.start()
    try:
        with pytest.raises(_Interrupt):
            q.get(timeout=20.0)
    finally:
        sender.join(TIMEOUT)
        signal.signal(signal.SIGUSR1, old)
    # The handler runs at most one wait slice (recovery_interval, 1 s) late; generous for load.
    assert time.monotonic() - sent[0] < 5.0, "the handler's exception did not end the get"


# -- undecodable raw items (issue 10, section 3) --------------------------------------------

_GOOD = np.arange(4, dtype=np.uint8)  # the data every forged item carries: 4 bytes


def _head(ndim: int, kind: int = 1, order: int = 0, desc_len: int = 64) -> bytes:
    """The fixed head of a raw descriptor: u4 desc_len | u1 kind | u1 order | u2 ndim."""
    return _serialize._RAW_HEAD.pack(desc_len, kind, order, ndim)


# Descriptors that do not fit 4 bytes of data, and the fault the error must name.
BAD_DESCRIPTORS = [
    pytest.param(
        _serialize.descriptor(np.dtype(np.uint8), (2**40,)),
        r"shape \(1099511627776,\) of uint8 needs 1099511627776 bytes of data, the item has 4 "
        r"after its 64-byte descriptor",
        id="shape-2**40",
    ),
    pytest.param(
        _serialize.descriptor(np.dtype(np.uint32), (2, 2)),
        r"shape \(2, 2\) of uint32 needs 16 bytes of data, the item has 4 after its 64-byte "
        r"descriptor",
        id="shape-past-the-data",
    ),
    pytest.param(
        _serialize.descriptor(np.dtype(np.int64), (2**62, 4)),
        r"shape \(4611686018427387904, 4\) has more elements than an array can",
        id="shape-overflows-int64",
    ),
    pytest.param(
        _serialize.descriptor(np.dtype(np.uint8), (4,))[:8],
        r"descriptor length 64 does not fit an item of 12 bytes",
        id="truncated-descriptor",
    ),
    pytest.param(
        _head(1, desc_len=40) + struct.pack("<q", 4) + b"'|u1'".ljust(24, b"\0"),
        r"descriptor length 40 does not fit an item of 44 bytes",
        id="descriptor-length-not-padded",
    ),
    pytest.param(
        _head(8) + b"\0" * 56,
        r"a descriptor of 64 bytes cannot hold 8 dimensions",
        id="dimensions-past-the-descriptor",
    ),
    pytest.param(
        _head(65, desc_len=576) + b"\0" * 568,
        r"65 dimensions, more than numpy's (32|64)",
        id="too-many-dimensions",
    ),
    pytest.param(
        _head(1) + struct.pack("<q", -4) + b"'|u1'".ljust(48, b"\0"),
        r"negative dimension in shape \(-4,\)",
        id="negative-dimension",
    ),
    pytest.param(
        _head(1) + struct.pack("<q", 4) + b"not a dtype(".ljust(48, b"\0"),
        r"unreadable dtype b'not a dtype\(' \(SyntaxError\)",
        id="garbage-dtype",
    ),
    pytest.param(
        _head(1) + struct.pack("<q", 4) + b"'<q9'".ljust(48, b"\0"),
        r"""unreadable dtype b"'<q9'" \(TypeError\)""",
        id="unknown-dtype",
    ),
    pytest.param(
        # Raw bytes taken as object pointers would crash the consumer.
        _serialize.descriptor(np.dtype(object), ()),
        r"dtype object holds Python objects",
        id="object-dtype",
    ),
    pytest.param(
        _head(1, kind=7) + struct.pack("<q", 4) + b"'|u1'".ljust(48, b"\0"),
        r"unknown item kind 7",
        id="unknown-kind",
    ),
    pytest.param(
        _head(1, order=9) + struct.pack("<q", 4) + b"'|u1'".ljust(48, b"\0"),
        r"unknown memory order 9",
        id="unknown-order",
    ),
]


def undecodable_msg(name: str, size: int, fault: str) -> str:
    return (
        rf"^raw item of {size} bytes from queue '{esc(name)}' cannot be decoded: {fault}; "
        r"the item was taken off the queue$"
    )


def put_forged(q: SharedMemoryQueue, desc: bytes, monkeypatch: pytest.MonkeyPatch) -> int:
    """Put ``_GOOD``'s 4 bytes behind the descriptor ``desc``, through the queue's own put
    (its codec's encode forges the one item); return the item's size."""
    size = len(desc) + _GOOD.nbytes
    with monkeypatch.context() as m:
        m.setattr(q._codec, "encode", lambda obj: _serialize.Parts([desc, _GOOD.data], size))
        q.put(_GOOD, timeout=TIMEOUT)
    return size


@pytest.mark.parametrize(("desc", "fault"), BAD_DESCRIPTORS)
def test_undecodable_item_is_consumed_and_reported(
    new_queue: MakeQueue, monkeypatch: pytest.MonkeyPatch, desc: bytes, fault: str
) -> None:
    """An item whose descriptor does not fit its bytes raises a ValueError naming the queue,
    the item's size and the fault; it is consumed, and the items behind it flow."""
    q = new_queue(raw=True, capacity=4, item_size=1024)
    behind = np.arange(6, dtype=np.float32).reshape(2, 3)
    size = put_forged(q, desc, monkeypatch)
    q.put(behind, timeout=TIMEOUT)
    q.put(b"after", timeout=TIMEOUT)

    with pytest.raises(ValueError, match=undecodable_msg(q.name, size, fault)):
        q.get(timeout=TIMEOUT)
    assert q.qsize() == 2, "the bad item was not consumed"
    assert_same_array(q.get(timeout=TIMEOUT), behind)
    assert q.get(timeout=TIMEOUT) == b"after"
    metrics = q.get_metrics()
    assert (metrics["total_gets"], metrics["queue_size"]) == (3, 0)
    still_works(q, _GOOD, [])


def test_undecodable_item_in_a_batch(new_queue: MakeQueue, monkeypatch: pytest.MonkeyPatch) -> None:
    """get_batch returns the items before an undecodable one; the next get raises for it, and
    the items after it come out in order, as for an item that fails to unpickle."""
    q = new_queue(raw=True, capacity=4, item_size=256)
    q.put(b"first", timeout=TIMEOUT)
    size = put_forged(q, _serialize.descriptor(np.dtype(np.uint8), (2**40,)), monkeypatch)
    q.put(b"third", timeout=TIMEOUT)

    assert q.get_batch(4, timeout=TIMEOUT) == [b"first"]
    with pytest.raises(ValueError, match=undecodable_msg(q.name, size, "shape .*")):
        q.get(timeout=TIMEOUT)
    assert q.get_batch(4, timeout=TIMEOUT) == [b"third"]
    assert q.empty()
    still_works(q, _GOOD, [])


class _NoArrays:
    """numpy, except that making an array fails the test."""

    def __getattr__(self, attr: str) -> Any:
        if attr in ("ndarray", "frombuffer", "empty"):
            raise AssertionError(f"np.{attr} used on an undecodable item")
        return getattr(np, attr)


@pytest.mark.parametrize(("desc", "fault"), BAD_DESCRIPTORS)
def test_codec_checks_a_descriptor_before_making_an_array(
    monkeypatch: pytest.MonkeyPatch, desc: bytes, fault: str
) -> None:
    """Both the copy path (decode of the bytes the core copied out) and the view path check
    the descriptor against the item's bytes before any array exists, and read nothing past
    the item: the buffer ends where the item ends."""
    codec = _serialize.RawCodec("'q'")
    item = desc + _GOOD.tobytes()
    buf = memoryview(item)
    monkeypatch.setattr(_serialize, "np", _NoArrays())
    msg = undecodable_msg("q", len(item), fault)
    with pytest.raises(ValueError, match=msg):
        codec.view(buf, 0, len(item))
    with pytest.raises(ValueError, match=msg):
        codec.decode(bytearray(item))  # what the core copies out of the slot


def test_undecodable_item_in_get_view(
    new_queue: MakeQueue, monkeypatch: pytest.MonkeyPatch
) -> None:
    """get_view raises the same ValueError for an undecodable item, without yielding; the item
    is consumed, its slot is free again, and the items behind it flow."""
    q = new_queue(raw=True, capacity=2, item_size=256)
    size = put_forged(q, _serialize.descriptor(np.dtype(np.uint8), (2**40,)), monkeypatch)
    q.put(b"after", timeout=TIMEOUT)

    with (
        pytest.raises(ValueError, match=undecodable_msg(q.name, size, "shape .*")),
        q.get_view(timeout=TIMEOUT),
    ):
        pytest.fail("get_view yielded an undecodable item")
    with q.get_view(timeout=TIMEOUT) as arr:
        assert arr.tobytes() == b"after"
    del arr
    for _ in range(q.capacity):
        q.put_nowait(_GOOD)  # every slot is free again
    assert q.full()
    for _ in range(q.capacity):
        assert_same_array(q.get(timeout=TIMEOUT), _GOOD)
