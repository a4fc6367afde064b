"""Evaluation without the similarity matrix: ranks from streamed score blocks (docs/METRICS.md §Streaming).

The tie-averaged rank of a query's relevant clip is ``#better + #tied_others / 2``, so it only needs two
counters per query, accumulated block by block: a 100k-query x 1M-clip evaluation never holds more than one
``(row block, column chunk)`` tile of scores (plus a few cached tiles), whatever the collection size.

The scores come from a *block producer* ``score_block(q0, q1, c0, c1) -> (q1-q0, c1-c0) array`` (queries x
clips), e.g. :func:`embedding_scorer` for dot products of embeddings, or any callable (a model's scoring head,
a memmapped matrix: :func:`matrix_scorer`). Exactness does not rely on the producer giving bit-identical scores
for a pair computed in different tiles: every relevant score is read from the very tile that is later counted
(tiles holding relevant pairs are computed first and cached, or recomputed identically if the cache is full).
The producer must be deterministic for a given tile.

Directions: ``"t2a"`` ranks each query's relevant clip among all clips (one relevant clip per query, as
:func:`retrieval.metrics.gt_ranks_t2a`); ``"a2t"`` ranks each clip's best caption among all queries (as
:func:`retrieval.metrics.gt_ranks_a2t`). The numbers equal the in-memory functions exactly.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from retrieval.metrics import _count_true, metrics_from_ranks

ScoreBlock = Callable[[int, int, int, int], np.ndarray]

TILE_BYTES = 8 * 2**20      # scores of one tile (float32: 2M scores)
CACHE_BYTES = 128 * 2**20   # tiles holding relevant pairs, kept between the two passes of a row block


def embedding_scorer(query_emb: np.ndarray, clip_emb: np.ndarray) -> ScoreBlock:
    """Dot-product scores of two embedding matrices (``(Q, d)`` and ``(N, d)``), one tile at a time."""
    query_emb = np.asarray(query_emb)
    clip_emb = np.asarray(clip_emb)
    if query_emb.ndim != 2 or clip_emb.ndim != 2 or query_emb.shape[1] != clip_emb.shape[1]:
        raise ValueError(f"embedding shapes {query_emb.shape} and {clip_emb.shape} do not match")

    def score_block(q0: int, q1: int, c0: int, c1: int) -> np.ndarray:
        return query_emb[q0:q1] @ clip_emb[c0:c1].T

    score_block.shape = (query_emb.shape[0], clip_emb.shape[0])
    return score_block


def matrix_scorer(sims: np.ndarray) -> ScoreBlock:
    """Tiles of a stored (e.g. memmapped) ``(Q, N)`` matrix."""
    def score_block(q0: int, q1: int, c0: int, c1: int) -> np.ndarray:
        return np.asarray(sims[q0:q1, c0:c1])

    score_block.shape = sims.shape
    return score_block


def _relevant_of_rows(gt_cols: np.ndarray, n_rows: int, direction: str):
    """CSR (indptr, cols) of the relevant items of each ranking row of the direction."""
    if direction == "t2a":
        return np.arange(n_rows + 1, dtype=np.int64), gt_cols
    order = np.argsort(gt_cols, kind="stable")  # a2t: rows are clips, their relevant items are caption rows
    indptr = np.concatenate([[0], np.cumsum(np.bincount(gt_cols, minlength=n_rows))]).astype(np.int64)
    return indptr, order.astype(np.int64)


def stream_gt_ranks(score_block: ScoreBlock, shape: tuple[int, int], gt_cols: np.ndarray, direction: str = "t2a",
                    row_block: int | None = None, col_block: int | None = None, progress: bool = False,
                    workers: int = 1) -> np.ndarray:
    """0-based tie-averaged ranks, ``(Q,)`` for t2a or ``(N,)`` for a2t (``nan``: clip without caption).

    Memory: about ``workers x (TILE_BYTES x 3 + CACHE_BYTES)`` besides the producer's own data.
    With ``workers > 1`` the producer is called from several threads at once (it must be thread-safe; limit
    BLAS threads to 1 per worker to avoid oversubscription).
    """
    n_queries, n_clips = shape
    gt_cols = np.asarray(gt_cols, dtype=np.int64)
    if gt_cols.shape != (n_queries,) or (gt_cols.size and (gt_cols.min() < 0 or gt_cols.max() >= n_clips)):
        raise ValueError(f"gt_cols must be ({n_queries},) column indices in [0, {n_clips})")
    if direction not in ("t2a", "a2t"):
        raise ValueError(f"direction must be 't2a' or 'a2t', got {direction!r}")
    n_rows, n_cols = (n_queries, n_clips) if direction == "t2a" else (n_clips, n_queries)
    indptr, rel_cols = _relevant_of_rows(gt_cols, n_rows, direction)
    col_block = col_block or min(n_cols, 65536)
    row_block = row_block or max(1, min(n_rows, TILE_BYTES // (4 * col_block)))

    def tile(r0, r1, c0, c1):  # (rows of the direction) x (items ranked), a view: no copy for a2t
        block = score_block(r0, r1, c0, c1) if direction == "t2a" else score_block(c0, c1, r0, r1).T
        if block.shape != (r1 - r0, c1 - c0):
            raise ValueError(f"score_block returned shape {block.shape}, expected {(r1 - r0, c1 - c0)}")
        return block

    def rank_rows(r0: int) -> tuple[int, np.ndarray]:
        r1 = min(r0 + row_block, n_rows)
        lo, hi = indptr[r0], indptr[r1]
        local = np.repeat(np.arange(r1 - r0), np.diff(indptr[r0:r1 + 1]))
        cols = rel_cols[lo:hi]
        best = np.full(r1 - r0, -np.inf)
        cache, cached, dtype = {}, 0, np.float64
        for c in np.unique(cols // col_block):  # pass 1: tiles holding relevant pairs give each row's best score
            c0, c1 = int(c) * col_block, min((int(c) + 1) * col_block, n_cols)
            block = tile(r0, r1, c0, c1)
            dtype = block.dtype
            inside = (cols >= c0) & (cols < c1)
            np.maximum.at(best, local[inside], block[local[inside], cols[inside] - c0])
            if cached + block.nbytes <= CACHE_BYTES:
                cache[c0] = block
                cached += block.nbytes
        threshold = best.astype(dtype)[:, None]  # exact: a stored score (or -inf for a row without relevant item)
        better = np.zeros(r1 - r0, dtype=np.int64)
        tied = np.zeros(r1 - r0, dtype=np.int64)
        for c0 in range(0, n_cols, col_block):  # pass 2: count better and tied scores in every tile
            c1 = min(c0 + col_block, n_cols)
            block = cache.pop(c0) if c0 in cache else tile(r0, r1, c0, c1)
            better += _count_true(block > threshold, axis=1)
            tied += _count_true(block == threshold, axis=1)
        has = np.diff(indptr[r0:r1 + 1]) > 0
        return r0, np.where(has, better + (tied - 1) / 2.0, np.nan)

    ranks = np.full(n_rows, np.nan)
    starts = range(0, n_rows, row_block)
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=len(starts), desc=f"streaming {direction} ranks", unit="block")
    if workers > 1:  # numpy and BLAS release the GIL: row blocks run in parallel threads
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=workers) as pool:
            for r0, values in pool.map(rank_rows, starts):
                ranks[r0:r0 + values.size] = values
                bar is not None and bar.update()
    else:
        for r0 in starts:
            _, values = rank_rows(r0)
            ranks[r0:r0 + values.size] = values
            bar is not None and bar.update()
    if bar is not None:
        bar.close()
    return ranks


def streaming_metrics(score_block: ScoreBlock, shape: tuple[int, int], gt_cols: np.ndarray,
                      directions=("t2a", "a2t"), **kwargs) -> dict[str, dict[str, float]]:
    """:func:`retrieval.metrics.both_directions` without the matrix: ``{direction: metrics}``."""
    return {d: metrics_from_ranks(stream_gt_ranks(score_block, shape, gt_cols, d, **kwargs)) for d in directions}
