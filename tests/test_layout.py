"""The segment layout and the /dev/shm naming: pure functions, no queue, no processes."""

from __future__ import annotations

import itertools
import re

import numpy as np
import pytest

from shared_queue import _layout as L
from shared_queue._names import MAX_BASE, base_name

# The header as the diagram at the top of _layout.py draws it: name -> (offset, dtype).
EXPECTED_HEADER = {
    "magic": (0, "<u8"),
    "version": (8, "<u4"),
    "flags": (12, "<u4"),
    "capacity": (16, "<u8"),
    "item_size": (24, "<u8"),
    "slot_size": (32, "<u8"),
    "slots_offset": (40, "<u8"),
    "nonce": (48, "<u8"),
    "creator_pid": (56, "<i8"),
    "creator_start": (64, "<u8"),
    "created_ns": (72, "<u8"),
    "spare_slots": (80, "<u8"),
    "ring_offset": (88, "<u8"),
    "lock_kind": (96, "<u8"),
    # producer cache lines
    "tail": (128, "<u8"),
    "reserved": (136, "<u8"),
    "allocs": (144, "<u8"),
    "cursor": (152, "<u8"),
    "puts": (160, "<u8"),
    "bytes_in": (168, "<u8"),
    "high_water": (176, "<u8"),
    "room_wait_until": (184, "<u8"),
    "put_waits": (192, "<u8"),
    "put_wait_ns": (200, "<u8"),
    # consumer cache line
    "head": (256, "<u8"),
    "gets": (264, "<u8"),
    "bytes_out": (272, "<u8"),
    "get_waits": (280, "<u8"),
    "get_wait_ns": (288, "<u8"),
    "releases": (296, "<u8"),
    "sweep": (304, "<u8"),
    "name": (384, "|S128"),
    "run_id": (512, "|S128"),
    "dtype": (640, "|S1024"),
    "ndim": (1664, "<u8"),
    "shape": (1672, "|V256"),
    "producer_mutex": (2048, "|V64"),
    "consumer_mutex": (2112, "|V64"),
}

PRODUCER_LINE = [
    "tail", "reserved", "allocs", "cursor", "puts", "bytes_in", "high_water", "room_wait_until",
    "put_waits", "put_wait_ns",
]  # fmt: skip
CONSUMER_LINE = ["head", "gets", "bytes_out", "get_waits", "get_wait_ns", "releases", "sweep"]


def _fields() -> dict[str, tuple[int, str]]:
    fields = L.HEADER_DTYPE.fields
    assert fields is not None
    return {name: (off, dt.str) for name, (dt, off, *_) in fields.items()}


# -- header ---------------------------------------------------------------------------------


def test_header_is_one_page() -> None:
    assert L.HEADER_SIZE == 4096
    assert L.HEADER_DTYPE.itemsize == 4096


def test_header_fields_match_expected_table() -> None:
    assert _fields() == EXPECTED_HEADER
    # Field order in the dtype is the order of the diagram.
    assert list(L.HEADER_DTYPE.names or ()) == list(EXPECTED_HEADER)


def test_header_fields_do_not_overlap_and_fit() -> None:
    fields = L.HEADER_DTYPE.fields
    assert fields is not None
    spans = sorted((off, off + dt.itemsize, name) for name, (dt, off, *_) in fields.items())
    for (_, end, name), (start, _, nxt) in itertools.pairwise(spans):
        assert end <= start, f"{name} overlaps {nxt}"
    assert spans[-1][1] <= L.HEADER_SIZE


def test_docstring_diagram_matches_dtype() -> None:
    """Every "offset name type" triple drawn in the module docstring is the dtype's."""
    doc = L.__doc__
    assert doc is not None
    fields = _fields()
    triples = re.findall(r"(\d+)\s+([a-z_]+)\s+([uiS]\d+)\b", doc)
    drawn = {name: int(off) for off, name, _ in triples}
    # Fields drawn individually on the first lines of the diagram.
    assert set(drawn) == {
        "magic", "version", "flags", "capacity", "item_size", "slot_size", "slots_offset",
        "nonce", "creator_pid", "creator_start", "created_ns", "spare_slots", "ring_offset",
        "lock_kind", "name", "run_id", "dtype", "ndim", "shape",
    }  # fmt: skip
    for off, name, typ in triples:
        offset, _ = fields[name]
        assert int(off) == offset, name
        dt = L.HEADER_DTYPE.fields[name][0]  # type: ignore[index]
        base = dt.subdtype[0] if dt.subdtype else dt  # "shape u8[32]" is drawn by element
        assert base == np.dtype(typ if typ.startswith("S") else "<" + typ), name

    # The two cache lines: listed in order, u8 each, from the drawn starting offset.
    flat = re.sub(r"\s*\|\s*", " ", doc)  # drop the diagram's borders and line breaks
    for line, names in (("producer", PRODUCER_LINE), ("consumer", CONSUMER_LINE)):
        m = re.search(rf"(\d+)\s+{line} line:\s*([a-z_,\s]+?)\s*\(u8 each", flat)
        assert m is not None, f"{line} line missing from the diagram"
        start = int(m.group(1))
        listed = [n.strip() for n in m.group(2).split(",")]
        assert listed == names
        for i, name in enumerate(listed):
            assert fields[name] == (start + 8 * i, "<u8"), name


def test_producer_and_consumer_lines_are_separate_cache_lines() -> None:
    fields = _fields()
    prod = {fields[n][0] // 64 for n in PRODUCER_LINE}
    cons = {fields[n][0] // 64 for n in CONSUMER_LINE}
    static = {fields[n][0] // 64 for n in ("magic", "capacity", "item_size", "created_ns")}
    assert len(cons) == 1
    assert not prod & cons
    assert not (prod | cons) & static


def test_magic_spells_the_format_tag() -> None:
    assert L.MAGIC.to_bytes(8, "little") == b"QSQSHMQ1"
    assert L.VERSION == 2


def test_idx_indexes_every_u8_field_of_a_q_view() -> None:
    fields = _fields()
    eight = {n for n, (_, dt) in fields.items() if np.dtype(dt).itemsize == 8}
    assert set(L.IDX) == eight
    for name, idx in L.IDX.items():
        assert idx * 8 == fields[name][0], name
    assert L.IDX["tail"] == 16
    assert L.IDX["head"] == 32
    assert L.IDX["high_water"] == 22
    assert L.IDX["get_wait_ns"] == 36


def test_idx_reads_what_numpy_writes() -> None:
    buf = bytearray(L.HEADER_SIZE)
    h = np.ndarray((), L.HEADER_DTYPE, buffer=buf)
    for i, name in enumerate(sorted(L.IDX)):
        h[name] = 1000 + i
    del h
    q = memoryview(buf).cast("Q")
    for i, name in enumerate(sorted(L.IDX)):
        assert q[L.IDX[name]] == 1000 + i, name
    q.release()


# -- slots ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "expected"), [(0, 0), (1, 64), (63, 64), (64, 64), (65, 128), (4096, 4096)]
)
def test_round_up(n: int, expected: int) -> None:
    assert L.round_up(n) == expected


@pytest.mark.parametrize("item_size", [1, 8, 63, 64, 65, 100, 4095, 4096, 4097, 65536])
def test_slot_dtype(item_size: int) -> None:
    dt = L.slot_dtype(item_size)
    fields = dt.fields
    assert fields is not None
    length_dt, length_off = fields["length"][:2]
    blob_dt, blob_off = fields["blob"][:2]
    assert (length_off, length_dt.str) == (0, "<u4")
    assert blob_off == L.BLOB_OFFSET == 64
    assert blob_dt.itemsize >= item_size
    assert blob_dt.shape == (L.round_up(item_size),)
    assert dt.itemsize % 64 == 0
    assert dt.itemsize == 64 + L.round_up(item_size)
    assert dt.itemsize < 64 + item_size + 64  # no more than one line of padding


def test_slot_field_offsets_come_from_the_dtype() -> None:
    fields = L.slot_dtype(100).fields
    assert fields is not None
    for name in ("length", "state", "owner", "pin", "blob"):
        assert getattr(L, f"{name.upper()}_OFFSET") == fields[name][1], name
    # length and state share the first 8-byte word; owner and pin are 8-byte aligned
    assert (L.LENGTH_OFFSET, L.STATE_OFFSET) == (0, 4)
    assert L.OWNER_OFFSET % 8 == 0 and L.PIN_OFFSET % 8 == 0


@pytest.mark.parametrize(
    ("capacity", "item_size", "spare"),
    [(1, 1, 0), (1, 4096, 2), (1000, 4096, 0), (7, 100, 3), (3, 64, 1), (17, 64, 0)],
)
def test_segment_size(capacity: int, item_size: int, spare: int) -> None:
    slot = 64 + L.round_up(item_size)
    ring = L.round_up(4 * capacity)  # one u4 slot index per item, padded to a cache line
    assert L.segment_size(capacity, item_size, spare) == 4096 + ring + (capacity + spare) * slot
    g = L.geometry(capacity, item_size, spare)
    assert (g["ring_offset"], g["slots_offset"], g["slot_size"]) == (4096, 4096 + ring, slot)
    assert g["size"] % 64 == 0


def test_default_queue_segment_size() -> None:
    # capacity=1000, item_size=4096: the original defaults; a pickle queue has no spare slots.
    assert L.default_spare_slots(raw=False) == 0
    assert L.segment_size(1000, 4096) == 4096 + 4032 + 1000 * 4160


def _header(capacity: int, item_size: int, spare: int) -> dict[str, int]:
    g = L.geometry(capacity, item_size, spare)
    return {"capacity": capacity, "item_size": item_size, "spare_slots": spare, **g}


def test_geometry_error_accepts_what_geometry_makes() -> None:
    h = _header(5, 300, 2)
    assert L.geometry_error(h, h["size"]) is None


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        (
            "slot_size",
            64,
            r"^slot_size=64 \(capacity=5, item_size=300, spare_slots=2 make it 384\)$",
        ),
        ("slots_offset", 4096, r"^slots_offset=4096 .* make it 4160\)$"),
        ("ring_offset", 0, r"^ring_offset=0 .* make it 4096\)$"),
        ("capacity", 0, r"^capacity=0, item_size=300, spare_slots=2 out of range$"),
        ("item_size", 2**31, r"^capacity=5, item_size=2147483648, spare_slots=2 out of range$"),
        ("spare_slots", 3, r"^slot_size=384 .*|^file size"),
    ],
)
def test_geometry_error_names_the_field(field: str, value: int, message: str) -> None:
    h = _header(5, 300, 2)
    size = h["size"]
    h[field] = value
    problem = L.geometry_error(h, size)
    assert problem is not None and re.match(message, problem), problem


def test_geometry_error_checks_the_file_size() -> None:
    h = _header(5, 300, 2)
    assert L.geometry_error(h, h["size"] + 64) == (
        f"file size {h['size'] + 64} (the header's fields make it {h['size']})"
    )


# -- names ----------------------------------------------------------------------------------


def test_base_name_is_prefixed_and_readable() -> None:
    assert base_name("jobs", "") == "sq0--jobs"
    assert base_name("jobs", "run7") == "sq4-run7-jobs"


def test_base_name_run_id_namespaces() -> None:
    assert base_name("b", "a") != base_name("a-b", "")
    assert base_name("x", "r1") != base_name("x", "r2")
    assert base_name("x", "r1") != base_name("x", "")
    assert base_name("x", "r1") == base_name("x", "r1")


@pytest.mark.parametrize(
    ("name", "run_id"),
    [
        ("n" * 500, ""),
        ("n" * 196, ""),  # just over the limit once prefixed
        ("n", "r" * 500),
        ("é" * 300, ""),  # multi-byte: the cut must not split a character
        ("queue-" + "日本" * 200, "run"),
    ],
)
def test_long_names_are_hashed_within_limit(name: str, run_id: str) -> None:
    base = base_name(name, run_id)
    assert len(base.encode()) <= MAX_BASE <= 200
    base.encode().decode("utf-8")  # valid UTF-8
    assert "/" not in base and "\0" not in base
    full = f"sq{len(run_id)}-{run_id}-{name}"
    # A readable prefix of the full name survives, then a hash.
    assert re.fullmatch(r".+-[0-9a-f]{24}", base)
    prefix = base[:-25]
    assert len(prefix.encode()) >= MAX_BASE - 25 - 3  # at most a split character dropped
    assert full.startswith(prefix)
    # Deterministic: every process derives the same name.
    assert base_name(name, run_id) == base


def test_name_at_limit_is_not_hashed() -> None:
    name = "n" * (MAX_BASE - len("sq0--"))
    assert base_name(name, "") == "sq0--" + name
    assert len(base_name(name + "n", "")) <= MAX_BASE
    assert base_name(name + "n", "") != "sq0--" + name + "n"


def test_distinct_long_names_stay_distinct() -> None:
    common = "q" * 400
    names = [common + suffix for suffix in ("a", "b", "ab", "")] + [common[:-1] + "z"]
    bases = {base_name(n, "") for n in names}
    assert len(bases) == len(names)
    # Same long name, different run_ids.
    assert base_name(common, "r1") != base_name(common, "r2")
    # A long name and a run_id that together spell the same string differ.
    assert base_name("b" * 300, "a") != base_name("a-" + "b" * 300, "")


@pytest.mark.parametrize(
    ("name", "run_id", "exc", "pattern"),
    [
        ("", "", ValueError, r"^queue name must not be empty$"),
        ("", "r", ValueError, r"^queue name must not be empty$"),
        ("a/b", "", ValueError, r"^queue name 'a/b' must not contain '/' or NUL$"),
        ("/ab", "", ValueError, r"^queue name '/ab' must not contain '/' or NUL$"),
        ("a\0b", "", ValueError, r"^queue name 'a\\x00b' must not contain '/' or NUL$"),
        ("ab", "r/1", ValueError, r"^queue run_id 'r/1' must not contain '/' or NUL$"),
        ("ab", "r\0", ValueError, r"^queue run_id 'r\\x00' must not contain '/' or NUL$"),
        (1, "", TypeError, r"^queue name must be a str, not int$"),
        (b"ab", "", TypeError, r"^queue name must be a str, not bytes$"),
        (None, "", TypeError, r"^queue name must be a str, not NoneType$"),
        ("ab", None, TypeError, r"^queue run_id must be a str, not NoneType$"),
    ],
)
def test_invalid_names_raise(name: object, run_id: object, exc: type, pattern: str) -> None:
    with pytest.raises(exc, match=pattern):
        base_name(name, run_id)  # type: ignore[arg-type]


def test_core_layout_is_the_dtypes() -> None:
    """What the compiled core is told: every header field and slot field at its dtype offset."""
    out = L.core_layout(5, 2, 300)
    header = L.HEADER_DTYPE.fields
    slot = L.slot_dtype(300).fields
    assert header is not None and slot is not None
    for name, (_, off, *_) in header.items():
        assert out[f"header.{name}"] == off, name
    for name, (_, off, *_) in slot.items():
        assert out[f"slot.{name}"] == off, name
    assert (out["capacity"], out["pool"]) == (5, 7)
    assert out["slot_size"] == L.slot_dtype(300).itemsize
    assert {k: out[k] for k in ("FREE", "WRITING", "READY", "READING", "DONE")} == {
        "FREE": L.FREE, "WRITING": L.WRITING, "READY": L.READY, "READING": L.READING,
        "DONE": L.DONE,
    }  # fmt: skip


def test_the_mutexes_fit_their_fields() -> None:
    from shared_queue import _core

    assert _core.MUTEX_SIZE <= L.MUTEX_FIELD
    for name in ("producer_mutex", "consumer_mutex"):
        dt, off = L.HEADER_DTYPE.fields[name][:2]  # type: ignore[index]
        assert dt.itemsize == L.MUTEX_FIELD and off % 64 == 0, name
