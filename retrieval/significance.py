"""Paired randomisation (permutation) test on per-query scores.

Under the null hypothesis the two systems are exchangeable on every query, so the sign of each
per-query difference is a fair coin. The p-value is the share of sign-flipped mean differences at
least as extreme as the observed one (two-sided), with the +1 correction so it is never 0.
"""
from __future__ import annotations

import numpy as np


def paired_randomization_test(
    a: np.ndarray, b: np.ndarray, n_resamples: int = 10_000, seed: int = 0, block: int = 1000
) -> float:
    """Two-sided p-value for ``mean(a - b) != 0``; ``a`` and ``b`` are per-query scores (e.g. RR)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired scores must be 1-D and of equal length, got {a.shape} and {b.shape}")
    diff = a - b
    observed = abs(diff.mean())
    if observed == 0.0:
        return 1.0
    rng = np.random.default_rng(seed)
    extreme = 0
    tolerance = 1e-12 * max(1.0, observed)
    for start in range(0, n_resamples, block):
        n = min(block, n_resamples - start)
        signs = rng.integers(0, 2, size=(n, diff.size), dtype=np.int8) * 2 - 1
        means = np.abs(signs @ diff) / diff.size
        extreme += int(np.count_nonzero(means >= observed - tolerance))
    return (extreme + 1) / (n_resamples + 1)
