"""What a workload is: sizes (``Config``), one row of a table (``Workload``), who gets a column."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..common import KIB, MIB
from ..impls.base import Impl


@dataclass
class Config:
    """How much every workload moves; ``--quick`` is ``Config.quick()``."""

    items: int = 200_000
    rounds: int = 5_000  # ping-pong round trips
    wake_samples: int = 200
    wake_sleep: float = 0.002
    warmup: int = 20  # discarded round trips / wake-ups
    capacity: int = 1000
    item_size: int = 4096
    batch: int = 100
    array_bytes: int = 640 * MIB  # array data per arrays run
    array_min_items: int = 8
    # The nats section (workloads/nats.py): a loopback nats-server moves ~1-10k items/s here.
    nats_items: int = 10_000  # small dicts per batch-row run
    nats_rounds: int = 300  # round trips per round-trip run
    nats_array_bytes: int = 256 * MIB  # array data per arrays-row run

    @classmethod
    def quick(cls) -> Config:
        return cls(
            items=30_000,
            rounds=1_000,
            wake_samples=60,
            warmup=10,
            array_bytes=64 * MIB,
            nats_items=2_000,
            nats_rounds=100,
            nats_array_bytes=32 * MIB,
        )

    def array_items(self, nbytes: int) -> int:
        return max(self.array_min_items, self.array_bytes // nbytes)


# Which implementations get a column in a workload, by their roles (see Impl).
def base(impl: Impl) -> bool:
    return "base" in impl.roles


def base_sq(impl: Impl) -> bool:
    return "base" in impl.roles and impl.key == "sq"


def safety(impl: Impl) -> bool:
    return "safety" in impl.roles


@dataclass
class Workload:
    """One row: a measurement that takes an Impl and returns one number per run."""

    key: str
    title: str
    unit: str
    higher_is_better: bool
    run: Callable[[Impl, Config], float]
    wants: Callable[[Impl], bool] = base  # which implementations get a column
    ref: Callable[[Config], float] | None = None  # in-process reference column (COPYTO)
    # A bare-mechanism floor (no queue) measured beside the row in every repeat and reported
    # under the table; skipped with --no-ref.
    floor: Callable[[Config], float] | None = None
    # The Impl.key the row exists for: without an available implementation of that key the
    # row is skipped, with a note (the nats rows without nats-server).
    needs: str = ""


def size_label(nbytes: int) -> str:
    return f"{nbytes // MIB} MiB" if nbytes >= MIB else f"{nbytes // KIB} KiB"
