"""Refuse non-finite feature values at load time: one NaN in one clip would otherwise make a model NaN silently.

The archive's only legitimate NaN is the missing-expert marker (a scalar NaN instead of an array); the
loader turns it into ``ind = False`` before these checks run, so any NaN / +inf / -inf found here is a broken file.
Checks run on whole (N, ...) buffers in chunks (memory-bounded, no Python loop over clips).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from utils.errors import UserError

CHUNK_ROWS = 256


def nonfinite_rows(values: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
    """Indices ``i`` (ascending) where ``values[i]`` holds a NaN or +-inf, among the rows selected by bool ``rows``."""
    n = values.shape[0]
    bad = np.zeros(n, dtype=bool)
    for start in range(0, n, CHUNK_ROWS):
        block = values[start:start + CHUNK_ROWS].reshape(min(CHUNK_ROWS, n - start), -1)
        bad[start:start + CHUNK_ROWS] = ~np.isfinite(block).all(axis=1)
    if rows is not None:
        bad &= rows
    return np.flatnonzero(bad)


def describe(values: np.ndarray) -> str:
    """'2 NaN, 1 +inf' for the non-finite values of one clip."""
    parts = [(int(np.isnan(values).sum()), "NaN"), (int(np.isposinf(values).sum()), "+inf"),
             (int(np.isneginf(values).sum()), "-inf")]
    return ", ".join(f"{n} {name}" for n, name in parts if n)


def check_expert_rows(path: Path, split: str, clip_ids: list[str], values: np.ndarray, present: np.ndarray,
                      what: str) -> None:
    """UserError naming the file and the first clip whose kept frames (``values[i]``, present clips) are not finite."""
    bad = nonfinite_rows(values, present)
    if bad.size:
        i = int(bad[0])
        more = f"; {bad.size} clips of {split}_list.txt affected" if bad.size > 1 else ""
        raise UserError(f"{path}: clip '{clip_ids[i]}' ({split}): non-finite {what} ({describe(values[i])}); only a "
                        f"scalar NaN in place of the whole array marks a missing expert{more}")


def check_text_rows(path: Path, split: str, clip_ids: list[str], text: np.ndarray) -> None:
    """UserError naming the file, clip and caption whose kept word vectors (``text`` (N, K, T, D)) are not finite."""
    n, k = text.shape[:2]
    bad = nonfinite_rows(text.reshape(n * k, *text.shape[2:]))
    if bad.size:
        i, cap = divmod(int(bad[0]), k)
        more = f"; {bad.size} captions of {split}_list.txt affected" if bad.size > 1 else ""
        raise UserError(f"{path}: clip '{clip_ids[i]}' ({split}) caption {cap}: non-finite word vectors "
                        f"({describe(text[i, cap])}){more}")


def check_tail(where: str, values: np.ndarray, start: int) -> None:
    """The frames / tokens that truncation drops must be finite too (a NaN there still means a broken file)."""
    tail = values[start:]
    if tail.size and not np.isfinite(tail).all():
        raise UserError(f"{where}: non-finite values beyond the kept {start} rows ({describe(tail)})")
