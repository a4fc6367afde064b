"""utils.allocator: the training process's malloc and numpy huge-page settings take effect (glibc Linux)."""
from __future__ import annotations

import platform
import subprocess
import sys

import pytest

from utils.allocator import configure_memory, keep_freed_memory


@pytest.mark.skipif(not (sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"),
                    reason="glibc's mallopt")
def test_settings_take_effect_in_a_fresh_process():
    code = ("import numpy as np; from utils.allocator import configure_memory, keep_freed_memory; "
            "configure_memory(); mod = getattr(np, '_core', np.core).multiarray; "
            "print(keep_freed_memory(), mod._get_madvise_hugepage())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["True", "False"]


def test_idempotent():
    first = keep_freed_memory()
    configure_memory()
    assert keep_freed_memory() is first
