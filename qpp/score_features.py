"""The ``score`` block: post-retrieval features of each caption's row of sims (NQC, WIG, SMV-style), on raw
cosines and on the per-row z-scored row; vectorised over row blocks, no Python loop per query.
"""
from __future__ import annotations

import numpy as np

from retrieval.metrics import _row_block

TOPK = (10, 50)
_SCORE_BASE = ("top1", "gap12", "nqc_std10", "nqc_std50", "wig10", "wig50", "smv10")
SCORE_NAMES = list(_SCORE_BASE) + ["row_mean", "row_std"] + [f"z_{n}" for n in _SCORE_BASE]


def score_features(sims: np.ndarray) -> np.ndarray:
    """Post-retrieval features of every query row, ``(Q, 16)`` (names in :data:`SCORE_NAMES`).

    Raw cosines ``s`` and the per-row z-scored ``z = (s − mean_row) / std_row`` (which removes the query's global
    offset and spread). ``s_(1) ≥ s_(2) ≥ …`` are the row's sorted scores, ``k`` ∈ {10, 50}:
    top1 = s_(1); gap12 = s_(1) − s_(2); nqc_stdk = std(s_(1..k)); wigk = mean(s_(1..k)) − mean(s);
    smv10 = mean_{i≤10} u_i·|ln(u_i / ū)| with u = (s+1)/2 ∈ [0,1] (shifted so the log is defined; for z,
    u = z − min(z), floored at 1e-6), ū = mean of the top-10 u; row_mean, row_std (raw only: they are 0 and 1 for z).
    """
    n_q, n_c = sims.shape
    kmax = min(max(TOPK), n_c)
    out = np.empty((n_q, len(SCORE_NAMES)), dtype=np.float64)
    step = _row_block(n_c, per_cell=16)
    for start in range(0, n_q, step):
        block = np.asarray(sims[start:start + step], dtype=np.float64)
        mean = block.mean(axis=1, keepdims=True)
        std = block.std(axis=1, keepdims=True)
        z = (block - mean) / np.where(std > 0, std, 1.0)
        feats = []
        for arr, shift in ((block, None), (z, "min")):
            top = _sorted_topk(arr, kmax)
            m = arr.mean(axis=1)
            k10, k50 = min(10, kmax), kmax
            if shift is None:
                u = (top[:, :k10] + 1.0) / 2.0
            else:
                u = top[:, :k10] - arr.min(axis=1, keepdims=True)
            u = np.maximum(u, 1e-6)
            ubar = u.mean(axis=1, keepdims=True)
            smv = np.mean(u * np.abs(np.log(u / ubar)), axis=1)
            gap = top[:, 0] - top[:, 1] if kmax > 1 else np.zeros(len(top))
            feats += [top[:, 0], gap, top[:, :k10].std(axis=1), top[:, :k50].std(axis=1),
                      top[:, :k10].mean(axis=1) - m, top[:, :k50].mean(axis=1) - m, smv]
            if shift is None:
                feats += [m, arr.std(axis=1)]
        out[start:start + step] = np.column_stack(feats)
    return out


def _sorted_topk(arr: np.ndarray, k: int) -> np.ndarray:
    """The ``k`` largest values of each row, sorted descending (argpartition then a small sort)."""
    if k < arr.shape[1]:
        idx = np.argpartition(-arr, k - 1, axis=1)[:, :k]
        top = np.take_along_axis(arr, idx, axis=1)
    else:
        top = arr
    return -np.sort(-top, axis=1)
