"""Per-caption-query performance targets computed from a run's similarity matrix (docs/QPP.md §Targets).

For query row ``q`` with relevant clip column ``gt_cols[q]``:

* ``rank0``     — 0-based **tie-averaged** rank of the relevant clip (``retrieval.metrics.gt_ranks_t2a``:
  ``#strictly better + #tied others / 2``), so ties never favour or penalise a query arbitrarily;
* ``log2_rank`` — ``log2(rank0 + 1)``, the fork's target (log2 of the 1-based rank; 0 = clip ranked first).
  The fork used **ordinal** ranks from a double argsort, which breaks ties by position;
  :func:`ordinal_ranks_t2a` reproduces that for ``--reproduce-fork``;
* ``rr``        — reciprocal rank ``1 / (rank0 + 1)`` (no cut-off);
* ``hit10``     — 1.0 if ``rank0 < 10`` else 0.0 (R@10 of the single query; a tie straddling position 10 counts by
  its averaged rank).

``log2_rank`` is "lower is better", ``rr`` and ``hit10`` are "higher is better" (:data:`HIGHER_IS_BETTER`).
Evaluation and weights always work on *badness* (lower = better query), see :func:`badness`.
"""
from __future__ import annotations

import numpy as np

from retrieval.metrics import _row_block, gt_ranks_t2a

TARGETS = ("log2_rank", "rr", "hit10")
HIGHER_IS_BETTER = {"log2_rank": False, "rr": True, "hit10": True}


def targets_from_rank0(rank0: np.ndarray) -> dict[str, np.ndarray]:
    """All targets from 0-based (possibly fractional, tie-averaged) ranks."""
    rank0 = np.asarray(rank0, dtype=np.float64)
    return {
        "rank0": rank0,
        "log2_rank": np.log2(rank0 + 1.0),
        "rr": 1.0 / (rank0 + 1.0),
        "hit10": (rank0 < 10).astype(np.float64),
    }


def compute_targets(sims: np.ndarray, gt_cols: np.ndarray, ordinal: bool = False) -> dict[str, np.ndarray]:
    """``{"rank0", "log2_rank", "rr", "hit10"}``, each ``(Q,)`` float64.

    ``ordinal=True`` uses the fork's double-argsort ranks (ties broken by column order) instead of tie-averaged ones.
    """
    rank0 = ordinal_ranks_t2a(sims, gt_cols) if ordinal else gt_ranks_t2a(sims, gt_cols)
    return targets_from_rank0(rank0)


def ordinal_ranks_t2a(sims: np.ndarray, gt_cols: np.ndarray) -> np.ndarray:
    """0-based rank of the relevant clip as the fork computed it: ``argsort(argsort(-row))`` (stable).

    Equivalent without sorting: clips strictly better, plus tied clips at a smaller column index.
    """
    gt_cols = np.asarray(gt_cols, dtype=np.int64)
    n_q, n_c = sims.shape
    out = np.empty(n_q, dtype=np.float64)
    step = _row_block(n_c)
    cols = np.arange(n_c)
    for start in range(0, n_q, step):
        block = np.asarray(sims[start:start + step])
        g = gt_cols[start:start + step]
        gt = block[np.arange(block.shape[0]), g][:, None]
        better = np.count_nonzero(block > gt, axis=1)
        tied_before = np.count_nonzero((block == gt) & (cols[None, :] < g[:, None]), axis=1)
        out[start:start + step] = better + tied_before
    return out


def badness(values: np.ndarray, target: str) -> np.ndarray:
    """Orient a target (or a prediction of it) so that lower = better query."""
    if target not in HIGHER_IS_BETTER:
        raise ValueError(f"unknown target {target!r}; valid: {', '.join(TARGETS)}")
    values = np.asarray(values, dtype=np.float64)
    return -values if HIGHER_IS_BETTER[target] else values
