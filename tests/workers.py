"""The thread count of a test process, in one place for tests/ and benchmarks/.

`make test` runs each suite on two pytest-xdist workers (CI has 2 cores): there each worker, and
every process it starts (torchrun's ranks, `python -m fastcifar.train`), computes on one thread.
Two workers of two threads each spin-wait on each other's cores and run several times slower
than one worker alone; one thread each keeps both cores busy where one process would leave one
idle (imports, process starts, data preparation)."""

from __future__ import annotations

import os

import torch


def in_xdist_worker() -> bool:
    return bool(os.environ.get("PYTEST_XDIST_WORKER"))


def one_thread_per_worker() -> None:
    """Under an xdist worker: one thread here and, through OMP_NUM_THREADS, in its children."""
    if in_xdist_worker():
        os.environ["OMP_NUM_THREADS"] = "1"
        torch.set_num_threads(1)


# What tests/conftest.py sets, and tests/ddp_worker.py through it: 2 threads at most, so that a
# test's figures do not depend on the machine's core count.
TEST_THREADS = 1 if in_xdist_worker() else max(1, min(2, os.cpu_count() or 1))
