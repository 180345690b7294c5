"""The public face of the package: what it exports and how its exceptions relate to stdlib's."""

from __future__ import annotations

import importlib.resources
import queue
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

import shared_queue
from shared_queue import Empty, Full, IncompatibleQueueError, SharedMemoryQueue

PUBLIC = [
    "Empty",
    "Full",
    "IncompatibleQueueError",
    "Queue",
    "SharedMemoryQueue",
    "bridge",
    "connect",
]


def test_all_is_pinned() -> None:
    assert shared_queue.__all__ == PUBLIC


def test_every_public_name_exists_and_nothing_else_public_leaks() -> None:
    for name in PUBLIC:
        assert getattr(shared_queue, name) is not None
    public = {
        name
        for name, value in vars(shared_queue).items()
        if not name.startswith("_") and not isinstance(value, type(sys))  # submodules aside
    }
    assert public == set(PUBLIC)


def test_star_import_gives_the_public_names() -> None:
    ns: dict[str, object] = {}
    exec("from shared_queue import *", ns)
    assert sorted(k for k in ns if not k.startswith("__")) == sorted(PUBLIC)


def test_version() -> None:
    assert isinstance(shared_queue.__version__, str)
    assert shared_queue.__version__.count(".") >= 1


def test_exceptions_subclass_stdlib_queue_exceptions() -> None:
    assert issubclass(Empty, queue.Empty)
    assert issubclass(Full, queue.Full)
    assert not issubclass(Empty, queue.Full)
    assert not issubclass(Full, queue.Empty)
    assert issubclass(IncompatibleQueueError, Exception)
    assert not issubclass(IncompatibleQueueError, (queue.Empty, queue.Full))


def test_exceptions_reachable_on_the_class() -> None:
    assert SharedMemoryQueue.Empty is Empty
    assert SharedMemoryQueue.Full is Full


def test_exceptions_reachable_on_an_instance(make_queue: Callable[..., SharedMemoryQueue]) -> None:
    q = make_queue(capacity=1, item_size=64)
    assert q.Empty is Empty
    assert q.Full is Full


@pytest.mark.parametrize("catch", ["stdlib", "package", "class", "instance"])
def test_except_clauses_catch_the_queue_exceptions(
    make_queue: Callable[..., SharedMemoryQueue], catch: str
) -> None:
    q = make_queue(capacity=1, item_size=64)
    empty, full = {
        "stdlib": (queue.Empty, queue.Full),
        "package": (shared_queue.Empty, shared_queue.Full),
        "class": (SharedMemoryQueue.Empty, SharedMemoryQueue.Full),
        "instance": (q.Empty, q.Full),
    }[catch]
    with pytest.raises(empty):
        q.get_nowait()
    q.put_nowait(1)
    with pytest.raises(full):
        q.put_nowait(2)


def test_py_typed_ships() -> None:
    marker = importlib.resources.files("shared_queue").joinpath("py.typed")
    assert marker.is_file()
    # And the build includes it as package data.
    pyproject = Path(shared_queue.__file__).resolve().parent.parent / "pyproject.toml"
    if not pyproject.is_file():  # pragma: no cover - installed from a wheel
        pytest.skip("not a source checkout")
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    config = tomllib.loads(pyproject.read_text())
    assert "py.typed" in config["tool"]["setuptools"]["package-data"]["shared_queue"]
