"""Side-by-side benchmark: shared_queue vs multiprocessing.Queue vs faster-fifo vs pyzmq.

The code behind ``benchmarks/bench.py``, which only calls ``cli.main``.  A walk through it:

- ``cli.py`` -- the command line: which sections, workloads and implementations to run.
- ``impls/`` -- one module per implementation compared (shared_queue in its modes,
  ``multiprocessing.Queue``, faster-fifo, pyzmq, the NATS backend ``NatsQueue``), the
  unsafe-mutex baseline, the bare posix_ipc semaphore floor and the plain nats-py floor; all
  behind one small adapter, ``impls/base.py``.
- ``workloads/`` -- one module per section of the report (small dicts, arrays, async,
  safety, nats): what each row measures and which columns it has.
- ``natsserver.py`` -- the run's own ``nats-server`` on loopback for the nats section (the
  section is skipped when the binary is missing).
- ``procs.py`` -- forked children with a start barrier; every wait bounded.
- ``harness.py`` -- every implementation in one run, interleaved repeats, medians.
- ``report.py`` -- the markdown tables and the JSON (whose keys ``plot.py`` and
  ``docs/benchmarks.md`` rely on).

Worker processes use the ``fork`` start method.

Queue sizing: shared_queue gets ``capacity`` slots of ``item_size`` bytes;
``multiprocessing.Queue`` gets ``maxsize=capacity``; faster-fifo (bounded by
bytes) gets ``capacity * item_size`` bytes, i.e. the same shared-memory
footprint as shared_queue.

Robustness: children attach to shared_queue by name and ``close()`` at the
end, the parent ``close()``s and ``unlink()``s in ``finally``; every blocking
call has a timeout, children are joined with a timeout and killed if they
straggle, and a failing implementation shows ``error`` instead of stopping
the run.  Entries of this run (names contain ``sqbench_<pid>_``) left in
``/dev/shm`` are reported at the end.
"""
