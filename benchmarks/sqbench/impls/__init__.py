"""The implementations compared, one module each, and the columns they give.

- ``base.py``: the adapter (``Impl``, ``Ops``) the workloads program against.
- ``sharedqueue.py``: shared_queue in every mode (pickle, raw, typed, get_view) and variant.
- ``mpqueue.py``: ``multiprocessing.Queue``, the baseline of the ratios.
- ``fasterfifo.py``: faster-fifo.
- ``pyzmq.py``: pyzmq PUSH/PULL over ``ipc://``, the consumer bound first.
- ``nosafety.py``: the unsafe-mutex baseline for the safety section (shared_queue whose
  segments get plain, non-robust process-shared mutexes: a benchmark-only switch).
- ``posix_sem.py``: bare posix_ipc semaphores, the floors under the latency rows (no queue).
- ``nats.py``: ``NatsQueue``, the NATS JetStream backend (``--impl nats``, with the next).
- ``natspy.py``: plain nats-py JetStream, the floor of the nats section (its own bodies), and
  two variants of it (unconfirmed acks; the README loop).
"""

from __future__ import annotations

from .base import Impl
from .fasterfifo import FasterFifoImpl
from .mpqueue import MpQueueImpl
from .nats import NatsQueueImpl
from .natspy import NatsPyImpl
from .pyzmq import ZmqImpl
from .sharedqueue import SharedQueueImpl

IMPL_KEYS = ("sq", "mp", "ff", "zmq", "nats")  # --impl names, in column order


def build_impls(keys: list[str], variants: list[dict]) -> list[Impl]:
    """Every implementation column any workload may want, in column order."""
    impls: list[Impl] = []
    for key in keys:
        if key == "sq":
            impls += [
                SharedQueueImpl(mode="raw", roles=frozenset({"raw"})),
                SharedQueueImpl(mode="typed", roles=frozenset({"typed"})),
                SharedQueueImpl(mode="view", roles=frozenset({"typed"})),
            ]
            if variants:
                impls += [SharedQueueImpl(v) for v in variants]
                impls.append(SharedQueueImpl(roles=frozenset({"safety"})))
            else:
                impls.append(SharedQueueImpl(roles=frozenset({"base", "safety"})))
            impls.append(SharedQueueImpl(unsafe=True, roles=frozenset({"safety"})))
        elif key == "mp":
            impls.append(MpQueueImpl())
        elif key == "ff":
            impls.append(FasterFifoImpl())
        elif key == "zmq":
            impls.append(ZmqImpl())
        elif key == "nats":
            impls += [NatsPyImpl(v) for v in ("", "ack", "seq")]
            impls.append(NatsQueueImpl())
        else:
            raise SystemExit(f"unknown --impl {key!r} (choose from {', '.join(IMPL_KEYS)})")
    unique: dict[str, Impl] = {}
    for impl in impls:  # e.g. --variant nosafety is also the safety section's column
        if impl.label in unique:
            unique[impl.label].roles |= impl.roles
        else:
            unique[impl.label] = impl
    return list(unique.values())
