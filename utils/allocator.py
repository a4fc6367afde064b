"""Memory-allocator settings of a training process: fewer page faults and no huge-page stalls (same results).

* :func:`keep_freed_memory`: keep freed large blocks in the C heap instead of returning them to the OS (glibc
  only; elsewhere a no-op). A CPU training step allocates the same large tensors every time (the bf16 copy of each weight, each weight's
gradient, the activations). glibc serves a block above its mmap threshold with a fresh ``mmap`` and unmaps it
when freed, so every step touches tens of MB of new pages and pays a page fault per 4 KiB: measured here, about
15 ms of a ~200 ms bf16 step. Raising the mmap threshold to its maximum (32 MiB) and never trimming the heap makes
those blocks reusable. It does not change any result: the bits of a run are the same either way (checked by
training a few steps with and without it and hashing the weights).
* :func:`no_numpy_huge_pages`: numpy asks the kernel for transparent huge pages on every large array. Where the
  kernel then compacts memory to find free 2 MiB pages (``defrag=madvise``, as here), filling the loader's padded
  arrays stalled: loading train + val took 6.1 s with them, 5.3 s without, and the peak RSS fell from 1.34 to
  1.08 GiB (a partly written 2 MiB page counts whole).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import sys

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_MAX = 32 * 2**20  # glibc's upper limit on 64-bit (HEAP_MAX_SIZE / 2)

_done: bool | None = None


def keep_freed_memory() -> bool:
    """Tune glibc's malloc once per process; True when it took effect."""
    global _done
    if _done is not None:
        return _done
    _done = False
    if not sys.platform.startswith("linux"):
        return _done
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl or another libc without mallopt
        return _done
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    _done = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX)) and bool(mallopt(M_TRIM_THRESHOLD, 2**31 - 1))
    return _done


def no_numpy_huge_pages() -> None:
    """Stop numpy from madvising huge pages for its arrays (they cost stalls and RSS here; see above)."""
    import numpy as np

    setter = getattr(getattr(np, "_core", None), "multiarray", None) or getattr(np.core, "multiarray", None)
    if hasattr(setter, "_set_madvise_hugepage"):
        setter._set_madvise_hugepage(False)


def configure_memory() -> None:
    """Both settings above (idempotent)."""
    keep_freed_memory()
    no_numpy_huge_pages()
