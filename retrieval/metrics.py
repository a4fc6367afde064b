"""Retrieval metrics over a similarity matrix, as defined by the original CE code (docs/FUSION.md "Evaluation").

Conventions
-----------
* ``sims`` is ``(Q, N)``: one row per text query, one column per audio clip; higher = more similar.
* ``gt_cols[q]`` is the column of the one relevant clip of query row ``q`` (read from the manifest's
  qrels, never inferred from the shape).
* Ranks are **0-based and tie-averaged**: a ground-truth item tied with ``t`` others sits at the mean of
  the ``t + 1`` tied positions, i.e. ``rank = #strictly_better + #tied_others / 2``. This equals the
  original "averaging" mode (McSherry & Najork) without sorting anything: one comparison pass per row.
* text→audio (t2a): each query row ranks its clip among all N clips.
* audio→text (a2t): each clip column ranks each of its relevant captions among all Q captions; the clip's
  rank is the **minimum** over its captions (the best-ranked correct caption, VSE convention).
* NaN scores are refused (``ValueError`` naming the row / column): NaN compares false with everything, so it
  would otherwise turn into a rank (a NaN ground truth got rank -0.5). ``±inf`` are comparable and allowed.

Every function walks the matrix in row/column blocks so memory stays bounded for matrices larger than
RAM (``np.load(..., mmap_mode="r")`` inputs work unchanged).
"""
from __future__ import annotations

import numpy as np

METRIC_KEYS = ("R1", "R5", "R10", "R50", "MedR", "MeanR", "geometric_mean_R1-R5-R10", "mAP10")

# Bytes of temporaries one block may allocate; keeps peak memory flat whatever the matrix size.
_BLOCK_BYTES = 64 * 2**20
# Scores per comparison block of the rank counters: small enough that the second comparison pass over a block
# reads it from the CPU cache, not from RAM (2x faster than whole-matrix passes on the CLOTHO test matrix).
_CACHE_BLOCK_BYTES = 512 * 2**10


def _row_block(n_cols: int, per_cell: int = 2) -> int:
    return max(1, _BLOCK_BYTES // max(1, n_cols * per_cell))


def _count_true(mask: np.ndarray, axis: int) -> np.ndarray:
    """``np.count_nonzero(mask, axis)``, 3x faster: sum the bool bytes as small ints (no int64 cast)."""
    length = mask.shape[axis]
    return mask.view(np.uint8).sum(axis=axis, dtype=np.int16 if length < 2**15 else np.int64)


def _nan_mask(block: np.ndarray) -> np.ndarray | None:
    """``np.isnan(block)`` if the block holds a NaN, else ``None``. A sum first (NaN propagates), so the precise
    scan runs only for blocks whose sum is not finite (NaN, ±inf scores, or an overflowing sum)."""
    with np.errstate(invalid="ignore", over="ignore"):  # inf - inf: a NaN sum, then the precise scan
        if np.isfinite(block.sum()):
            return None
    nan = np.isnan(block)
    return nan if nan.any() else None


def gt_ranks_t2a(sims: np.ndarray, gt_cols: np.ndarray) -> np.ndarray:
    """0-based tie-averaged rank of each query's relevant clip, shape ``(Q,)``; ``ValueError`` on a NaN score."""
    sims = sims if isinstance(sims, np.ndarray) else np.asarray(sims)
    gt_cols = np.asarray(gt_cols, dtype=np.int64)
    n_queries, n_cols = sims.shape
    if gt_cols.shape != (n_queries,):
        raise ValueError(f"gt_cols has shape {gt_cols.shape}, expected ({n_queries},)")
    ranks = np.empty(n_queries, dtype=np.float64)
    step = max(1, _CACHE_BLOCK_BYTES // (n_cols * sims.itemsize))
    for start in range(0, n_queries, step):
        block = np.asarray(sims[start:start + step])
        nan = _nan_mask(block)
        if nan is not None:
            row, col = np.argwhere(nan)[0]
            raise ValueError(f"row {start + row} holds a NaN score (column {col}); NaN cannot be ranked")
        gt = block[np.arange(block.shape[0]), gt_cols[start:start + step]][:, None]
        better = _count_true(block > gt, axis=1)
        tied = _count_true(block == gt, axis=1) - 1
        ranks[start:start + step] = better + tied / 2.0
    return ranks


def best_caption_scores(sims: np.ndarray, gt_cols: np.ndarray) -> np.ndarray:
    """Per clip column, the highest score among its relevant caption rows (``-inf`` for a clip without any)."""
    gt_cols = np.asarray(gt_cols, dtype=np.int64)
    n_queries, n_clips = sims.shape
    if gt_cols.shape != (n_queries,):
        raise ValueError(f"gt_cols has shape {gt_cols.shape}, expected ({n_queries},)")
    best = np.full(n_clips, -np.inf, dtype=np.float64)
    step = _row_block(1, per_cell=1)
    for start in range(0, n_queries, step):  # one gathered score per row: memory-bounded for memmaps too
        rows = np.arange(start, min(start + step, n_queries))
        own = np.asarray(sims[rows, gt_cols[rows]], dtype=np.float64)
        np.maximum.at(best, gt_cols[rows], own)
    return best


def gt_ranks_a2t(sims: np.ndarray, gt_cols: np.ndarray) -> np.ndarray:
    """0-based tie-averaged rank of each clip's best-ranked relevant caption, shape ``(N,)``.

    The best-ranked caption is the highest-scoring one (the tie-averaged rank ``#better + #tied_others / 2``
    strictly increases as the score decreases), so one comparison pass over the matrix, row block by row
    block, ranks every clip: no per-caption pass. Clips with no relevant caption get ``nan``. ``ValueError``
    naming the column on a NaN score.
    """
    sims = sims if isinstance(sims, np.ndarray) else np.asarray(sims)
    n_queries, n_clips = sims.shape
    with np.errstate(invalid="ignore"):  # a NaN score is refused below, naming its column
        best = best_caption_scores(sims, gt_cols).astype(sims.dtype)  # exact: it is one of the stored scores
    better = np.zeros(n_clips, dtype=np.int64)
    tied = np.zeros(n_clips, dtype=np.int64)
    step = max(1, _CACHE_BLOCK_BYTES // (n_clips * sims.itemsize))  # cache-sized row blocks
    for start in range(0, n_queries, step):
        block = np.asarray(sims[start:start + step])
        nan = _nan_mask(block)
        if nan is not None:
            col, row = np.argwhere(nan.T)[0]
            raise ValueError(f"column {col} holds a NaN score (row {start + row}); NaN cannot be ranked")
        better += _count_true(block > best, axis=0)
        tied += _count_true(block == best, axis=0)
    ranks = better + (tied - 1) / 2.0
    ranks[np.bincount(np.asarray(gt_cols, dtype=np.int64), minlength=n_clips) == 0] = np.nan  # no caption
    return ranks


def metrics_from_ranks(ranks: np.ndarray) -> dict[str, float]:
    """R@k (percent), MedR / MeanR (1-based), geometric mean of R1/R5/R10, mAP@10 (percent).

    R@1 counts rank == 0 exactly, as the original does (a tie at the top is not a hit). With one
    relevant item per query, mAP@10 equals MRR@10 (the DCASE convention).
    """
    ranks = np.asarray(ranks, dtype=np.float64)
    ranks = ranks[~np.isnan(ranks)]
    if ranks.size == 0:
        raise ValueError("no ranks to summarise")
    out = {
        "R1": 100.0 * float(np.mean(ranks == 0)),
        "R5": 100.0 * float(np.mean(ranks < 5)),
        "R10": 100.0 * float(np.mean(ranks < 10)),
        "R50": 100.0 * float(np.mean(ranks < 50)),
        "MedR": float(np.median(ranks)) + 1.0,
        "MeanR": float(np.mean(ranks)) + 1.0,
    }
    recalls = np.array([out["R1"], out["R5"], out["R10"]])
    out["geometric_mean_R1-R5-R10"] = float(np.exp(np.log(recalls).mean())) if np.all(recalls > 0) else 0.0
    out["mAP10"] = 100.0 * float(np.mean(reciprocal_ranks(ranks, cutoff=10)))
    return out


def reciprocal_ranks(ranks: np.ndarray, cutoff: int | None = None) -> np.ndarray:
    """Per-query reciprocal rank ``1 / (rank + 1)`` of 0-based ranks; 0 beyond ``cutoff`` if given."""
    ranks = np.asarray(ranks, dtype=np.float64)
    rr = 1.0 / (ranks + 1.0)
    if cutoff is not None:
        rr = np.where(ranks < cutoff, rr, 0.0)
    return rr


def clip_major_gt_cols(n_clips: int, captions_per_clip: int) -> np.ndarray:
    """Ground-truth columns of a clip-major ``(K·N, N)`` matrix: row ``r`` belongs to clip ``r // K``."""
    return np.repeat(np.arange(n_clips, dtype=np.int64), captions_per_clip)


def t2a_metrics(sims: np.ndarray, gt_cols: np.ndarray) -> dict[str, float]:
    return metrics_from_ranks(gt_ranks_t2a(sims, gt_cols))


def a2t_metrics(sims: np.ndarray, gt_cols: np.ndarray) -> dict[str, float]:
    return metrics_from_ranks(gt_ranks_a2t(sims, gt_cols))


def both_directions(sims: np.ndarray, gt_cols: np.ndarray) -> dict[str, dict[str, float]]:
    """``{"t2a": M, "a2t": M}`` for one similarity matrix."""
    return {"t2a": t2a_metrics(sims, gt_cols), "a2t": a2t_metrics(sims, gt_cols)}
