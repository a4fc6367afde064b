"""Where and how a training process computes: the device, the seeds, the CPU threads and torch's global settings.

Set once per process, before the model is built (train.py, the benchmarks, the tests). None of these settings
changes a result except the device and the thread count, which ``metrics.json["numerics"]`` records.
"""
from __future__ import annotations

import os
import random

import numpy as np
import torch

from utils.allocator import configure_memory
from utils.errors import UserError


def resolve_device(spec: str | None) -> torch.device:
    """``cpu`` | ``cuda`` | ``N`` (CUDA index) | None/"auto" (CUDA when available, else CPU).

    Asking for CUDA by name on a machine without it is an error, never a silent CPU run.
    """
    spec = "auto" if spec is None else str(spec).strip().lower()
    if spec == "cpu":
        return torch.device("cpu")
    if spec in ("auto", ""):
        return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    if spec == "cuda":
        if not torch.cuda.is_available():
            raise UserError("--device: 'cuda': CUDA is not available on this machine (use --device cpu)")
        return torch.device("cuda")
    index = spec[5:] if spec.startswith("cuda:") else spec
    if not index.isdigit():
        raise UserError(f"--device: '{spec}': expected cpu, cuda or a CUDA device index")
    if not torch.cuda.is_available():
        raise UserError(f"--device: '{spec}': CUDA is not available on this machine (use --device cpu)")
    if int(index) >= torch.cuda.device_count():
        raise UserError(f"--device: '{spec}': only {torch.cuda.device_count()} CUDA device(s) visible")
    return torch.device(f"cuda:{int(index)}")


def set_seeds(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def default_threads() -> int:
    """$OMP_NUM_THREADS if set, else every CPU this process may run on."""
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if env.isdigit() and int(env) > 0:
        return int(env)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


def configure_torch(device: torch.device, threads: int | None = None) -> None:
    """Deterministic algorithms (cheap here) and the CPU thread count.

    On a CPU shared with other busy processes, fewer threads can be much faster: OpenMP barriers spin on
    preempted cores (a (16, 768) BatchNorm went from 0.04 ms to 70 ms with 2 threads on 2 loaded cores).
    """
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    # torch.use_deterministic_algorithms itself, minus its import of torch._inductor (1.5 s per process here) to
    # set inductor's flag: nothing here compiles
    setter = getattr(torch._C, "_set_deterministic_algorithms", None)
    if setter is not None:
        setter(True, warn_only=True)
    else:
        torch.use_deterministic_algorithms(True, warn_only=True)
    # ...without its debugging aid of filling every new tensor with NaN: nothing here reads uninitialised
    # memory, and the fills cost ~11 % of a bf16 CPU step (every autocast weight cast allocates).
    torch.utils.deterministic.fill_uninitialized_memory = False
    torch.set_num_threads(threads if threads else default_threads())
    configure_memory()  # utils/allocator.py: fewer page faults, no huge-page stalls (same bits)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = False

