"""How idle OpenMP worker threads wait: a short spin, then sleep. Must run before torch loads its OpenMP runtime.

GNU OpenMP (torch's CPU wheels) by default spins ~300,000 rounds at every barrier before sleeping; with
``OMP_WAIT_POLICY=PASSIVE`` it sleeps at once and pays a futex wake-up at each of the ~1,000 parallel regions
of a training step. Measured here (2 cores, 2 threads, one bf16 CE training step, 3 runs each; "loaded": one
other busy process):

| waiting | quiet | loaded |
|---|---|---|
| ``OMP_WAIT_POLICY=PASSIVE`` (sleep at once) | 169-200 ms | 233-281 ms |
| ``GOMP_SPINCOUNT=1000`` (the default set here) | 141-148 ms | 267-281 ms |
| ``GOMP_SPINCOUNT=10000`` | 131-142 ms | 499-522 ms |
| ``GOMP_SPINCOUNT=100000`` | 136-149 ms | 422-2165 ms |

A short spin keeps most of the quiet-machine gain and bounds the loss on a shared one, where long spins on
preempted cores are ruinous. It changes timing only, never a result. A user's own ``OMP_WAIT_POLICY`` or
``GOMP_SPINCOUNT`` is left alone.
"""
from __future__ import annotations

import os

SPIN_COUNT = "1000"


def configure_openmp_waiting() -> None:
    """Set ``GOMP_SPINCOUNT`` (unless the user chose a waiting policy); no effect once OpenMP is loaded."""
    if "OMP_WAIT_POLICY" in os.environ or "GOMP_SPINCOUNT" in os.environ:
        return
    os.environ["GOMP_SPINCOUNT"] = SPIN_COUNT
