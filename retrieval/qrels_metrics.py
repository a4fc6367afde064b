"""Multi-relevance metrics from a similarity matrix and a :class:`~retrieval.qrels.Qrels` (docs/METRICS.md).

Per query: R@k (hit: any relevant clip in the top k), mAP@k with the DCASE 2025 denominator (the number of
relevant clips of the query, not ``min(k, R)``), nDCG@k (trec_eval's linear gains = grades), MRR, and the
rank of the first relevant clip (MedR / MeanR). Ties are averaged, generalising the original CE code:

* every relevant clip gets the **expected position it would have if its tie group were shuffled**: a group of
  ``t`` equal scores after ``b`` strictly better ones, holding ``m`` relevant clips, places its ``j``-th relevant
  clip (j = 1..m) at ``b + j·(t+1)/(m+1) - 1`` (0-based). With one relevant clip this is the original's
  ``b + (t-1)/2`` exactly, so the one-relevant case reproduces :mod:`retrieval.metrics` number for number;
* a graded group gives each of its ``m`` relevant slots the mean grade of the group (the expected gain there);
* metrics are then computed from these positions as if they were ranks (R@1 needs position exactly 0, as in
  the original; R@k needs position < k).

When every tie group is "pure" (all relevant or all non-relevant) the positions are the ordinary integer
ranks, identical for any tie-breaking, so the numbers equal trec_eval / ir-measures on the same run.

Everything is computed in row blocks (memory bounded, memmaps fine) with no Python loop over queries.
"""
from __future__ import annotations

import numpy as np

from retrieval.metrics import _BLOCK_BYTES, _count_true, gt_ranks_t2a, metrics_from_ranks
from retrieval.qrels import Qrels

MAP_CUTOFFS = (10, 16)
NDCG_CUTOFFS = (10,)


# a2t on an in-memory matrix up to this size: rank along rows of a transposed copy (faster than column reads).
TRANSPOSE_COPY_BYTES = 256 * 2**20
# Above this many relevant clips per row, one sort per row beats one comparison pass per relevant clip.
SORT_ABOVE = 6


def _float32_keys(values: np.ndarray) -> np.ndarray:
    """Order-preserving uint64 keys of float32 values (``-0.0`` and ``0.0`` equal, like the floats)."""
    bits = (np.asarray(values, dtype=np.float32) + np.float32(0.0)).view(np.uint32)
    return np.where(bits & np.uint32(0x80000000), ~bits, bits | np.uint32(0x80000000)).astype(np.uint64)


def _counts_by_sorting(block: np.ndarray, local_rows: np.ndarray, cols: np.ndarray):
    """Better / tied counts of many entries per row: sort each row once, then one global binary search.

    Keys ``row << 32 | float_key`` make the row-sorted block one ascending array, so a single
    ``np.searchsorted`` finds every entry's run of equal scores (no loop over rows).
    """
    n_rows, n_cols = block.shape
    keys = _float32_keys(np.sort(block, axis=1))
    keys |= np.arange(n_rows, dtype=np.uint64)[:, None] << np.uint64(32)
    keys = keys.ravel()
    entry_keys = _float32_keys(block[local_rows, cols]) | (local_rows.astype(np.uint64) << np.uint64(32))
    order = np.argsort(entry_keys)  # searching sorted needles: ~7x faster than in entry order (cache friendly)
    left, right = np.empty((2, entry_keys.size), dtype=np.int64)
    left[order] = np.searchsorted(keys, entry_keys[order], side="left")
    right[order] = np.searchsorted(keys, entry_keys[order], side="right")
    return (local_rows + 1) * n_cols - right, right - left


def _score_counts(sims: np.ndarray, qrels: Qrels):
    """Per stored entry (row = query row of ``sims``): its score, #scores strictly better in its row, #equal
    scores (itself included). Row blocks of ``sims``; per block either one comparison pass per entry (entry rows
    gathered in bounded chunks) or, with many entries per row, one sort per row."""
    nnz = qrels.cols.size
    scores = np.empty(nnz, dtype=np.float64)
    better = np.empty(nnz, dtype=np.int64)
    tied = np.empty(nnz, dtype=np.int64)
    rows = qrels.rows()
    n_rows, n_cols = sims.shape
    sortable = sims.dtype in (np.float32, np.float16)
    row_step = max(1, _BLOCK_BYTES // max(1, n_cols * (16 if sortable else sims.itemsize)))
    entry_step = max(1, _BLOCK_BYTES // max(1, n_cols * (sims.itemsize + 2)))
    for start in range(0, n_rows, row_step):
        block = np.asarray(sims[start:start + row_step])
        lo, hi = qrels.indptr[start], qrels.indptr[start + block.shape[0]]
        local = rows[lo:hi] - start
        scores[lo:hi] = block[local, qrels.cols[lo:hi]]
        if sortable and hi - lo > SORT_ABOVE * block.shape[0]:
            better[lo:hi], tied[lo:hi] = _counts_by_sorting(block, local, qrels.cols[lo:hi])
            continue
        for e0 in range(lo, hi, entry_step):  # entry chunks: a gathered copy of their rows, bounded in size
            e1 = min(e0 + entry_step, hi)
            sub = block[rows[e0:e1] - start]
            s = sub[np.arange(e1 - e0), qrels.cols[e0:e1]][:, None]
            better[e0:e1] = _count_true(sub > s, axis=1)
            tied[e0:e1] = _count_true(sub == s, axis=1)
    return scores, better, tied


def _score_counts_by_column(sims: np.ndarray, qrels_t: Qrels):
    """The same counts down the columns of ``sims`` (``qrels_t`` rows = columns of ``sims``), reading ``sims``
    in row blocks only (memmap friendly): each entry's score is gathered first, then compared with its column
    of every row block."""
    cols_of_sims = qrels_t.rows()          # entry -> column of sims (the ranking "query", e.g. a clip)
    rows_of_sims = qrels_t.cols            # entry -> row of sims (the relevant item, e.g. a caption)
    scores = np.asarray(sims[rows_of_sims, cols_of_sims], dtype=np.float64) if rows_of_sims.size else np.empty(0)
    nnz = scores.size
    better = np.zeros(nnz, dtype=np.int64)
    tied = np.zeros(nnz, dtype=np.int64)
    n_rows = sims.shape[0]
    thresholds = scores.astype(sims.dtype)  # exact: stored scores
    row_step = max(1, min(n_rows, 4096))
    entry_step = max(1, _BLOCK_BYTES // (row_step * (sims.itemsize + 2)))
    for start in range(0, n_rows, row_step):
        block = np.asarray(sims[start:start + row_step])
        for e0 in range(0, nnz, entry_step):
            e1 = min(e0 + entry_step, nnz)
            sub = block[:, cols_of_sims[e0:e1]]  # (rows of the block, entries)
            better[e0:e1] += _count_true(sub > thresholds[e0:e1], axis=0)
            tied[e0:e1] += _count_true(sub == thresholds[e0:e1], axis=0)
    return scores, better, tied


def relevant_positions(sims: np.ndarray, qrels: Qrels, transposed: bool = False):
    """Tie-averaged 0-based positions of every relevant clip, sorted by (row, position).

    Returns ``(rows, positions, slot_gains)``, each ``(nnz,)``; ``qrels.indptr`` delimits the rows. With
    ``transposed`` the rows of ``qrels`` are the columns of ``sims`` (audio->text).
    """
    n_rows, n_cols = (sims.shape[1], sims.shape[0]) if transposed else sims.shape
    if qrels.shape != (n_rows, n_cols):
        raise ValueError(f"qrels shape {qrels.shape} does not match the matrix ({n_rows}, {n_cols})")
    if transposed and not isinstance(sims, np.memmap) and sims.nbytes <= TRANSPOSE_COPY_BYTES:
        sims, transposed = np.ascontiguousarray(np.asarray(sims).T), False  # row path: sorts, no column gathers
    rows = qrels.rows()
    gt = None if transposed else qrels.single_relevant_cols()
    if gt is not None:  # the classic protocol: the exact code path of retrieval.metrics
        return rows, gt_ranks_t2a(sims, gt), qrels.gains.copy()
    scores, better, tied = _score_counts_by_column(sims, qrels) if transposed else _score_counts(sims, qrels)
    order = np.lexsort((qrels.cols, -scores, rows))  # row, then score descending
    s_rows, s_scores, s_better, s_tied = rows[order], scores[order], better[order], tied[order]
    gains = qrels.gains[order]
    new_group = np.ones(order.size, dtype=bool)
    new_group[1:] = (s_rows[1:] != s_rows[:-1]) | (s_scores[1:] != s_scores[:-1])
    group = np.cumsum(new_group) - 1
    starts = np.flatnonzero(new_group)
    m = np.bincount(group)[group]                      # relevant clips in the entry's tie group
    j = np.arange(order.size) - starts[group] + 1      # its slot among them, 1-based
    positions = s_better + j * (s_tied + 1) / (m + 1) - 1
    slot_gains = (np.bincount(group, weights=gains) / np.bincount(group))[group]
    return s_rows, positions, slot_gains


def per_query_metrics(sims: np.ndarray, qrels: Qrels, transposed: bool = False,
                      map_cutoffs=MAP_CUTOFFS, ndcg_cutoffs=NDCG_CUTOFFS) -> dict[str, np.ndarray]:
    """Per-query values (``nan`` for queries without a relevant clip): ``first_rank`` (0-based position of
    the best relevant clip), ``AP@k``, ``nDCG@k``, ``RR`` and ``n_relevant``. For paired tests and fusion."""
    rows, pos, slot_gains = relevant_positions(sims, qrels, transposed)
    n_q = qrels.n_queries
    n_rel = qrels.n_relevant()
    has = n_rel > 0
    out: dict[str, np.ndarray] = {"n_relevant": n_rel}
    first = np.full(n_q, np.nan)
    first[has] = pos[qrels.indptr[:-1][has]]
    out["first_rank"] = first
    hits = np.arange(pos.size) - qrels.indptr[rows] + 1  # relevant clips at or above this one
    for k in map_cutoffs:
        ap = np.bincount(rows, weights=np.where(pos < k, hits / (pos + 1.0), 0.0), minlength=n_q)
        out[f"AP@{k}"] = np.where(has, ap / np.maximum(n_rel, 1), np.nan)
    if ndcg_cutoffs:
        ideal_order = np.lexsort((-qrels.gains, qrels.rows()))
        ideal_gains = qrels.gains[ideal_order]
        ideal_slot = np.arange(pos.size) - qrels.indptr[rows]
        for k in ndcg_cutoffs:
            dcg = np.bincount(rows, weights=np.where(pos < k, slot_gains / np.log2(pos + 2.0), 0.0), minlength=n_q)
            idcg = np.bincount(rows, weights=np.where(ideal_slot < k, ideal_gains / np.log2(ideal_slot + 2.0), 0.0),
                               minlength=n_q)
            out[f"nDCG@{k}"] = np.where(has, dcg / np.where(idcg > 0, idcg, 1.0), np.nan)
    out["RR"] = 1.0 / (first + 1.0)
    return out


def summarise(per_query: dict[str, np.ndarray]) -> dict[str, float]:
    """Percent means over the queries that have a relevant clip, plus ``n_queries`` and ``mean_relevant``.

    R@k / MedR / MeanR / geometric mean are :func:`retrieval.metrics.metrics_from_ranks` of the first relevant
    position, so the one-relevant case gives today's numbers exactly.
    """
    has = per_query["n_relevant"] > 0
    if not has.any():
        raise ValueError("no query has a relevant clip")
    out = metrics_from_ranks(per_query["first_rank"][has])
    for key, values in per_query.items():
        if key.startswith("AP@"):
            out[f"mAP{key[3:]}"] = 100.0 * float(np.mean(values[has]))
        elif key.startswith("nDCG@"):
            out[f"nDCG{key[5:]}"] = 100.0 * float(np.mean(values[has]))
    out["MRR"] = 100.0 * float(np.mean(per_query["RR"][has]))
    out["n_queries"] = int(has.sum())
    out["mean_relevant"] = float(per_query["n_relevant"][has].mean())
    return out


def qrels_metrics(sims: np.ndarray, qrels: Qrels, direction: str = "t2a", **cutoffs) -> dict[str, float]:
    """Summary metrics of ``sims`` (``(Q, N)``, text rows x clip columns) against ``qrels`` (aligned to rows).

    ``direction="a2t"`` reads the same judgements the other way: each clip ranks all captions and its
    relevant captions are those whose judgements name it.
    """
    if direction == "t2a":
        return summarise(per_query_metrics(sims, qrels, False, **cutoffs))
    if direction == "a2t":
        return summarise(per_query_metrics(sims, qrels.transpose(), True, **cutoffs))
    raise ValueError(f"direction must be 't2a' or 'a2t', got {direction!r}")


def qrels_both_directions(sims: np.ndarray, qrels: Qrels) -> dict[str, dict[str, float]]:
    """``{"t2a": M, "a2t": M}`` multi-relevance summaries; clips no caption judges relevant are left out of a2t."""
    return {"t2a": qrels_metrics(sims, qrels, "t2a"), "a2t": qrels_metrics(sims, qrels, "a2t")}


def qrels_file_metrics(sims: np.ndarray, qrels_file, clip_ids, captions_per_clip: int) -> dict | None:
    """Multi-relevance metrics of a clip-major ``(K·N, N)`` matrix from a TREC qrels file, or ``None`` when the
    file does not exist (a data set without extra judgements). Query ids are the manifest's ``<clip>#<k>``.

    Returns ``{"file", "t2a", "a2t", "graded"}`` (a2t reads the judgements the other way).
    """
    from pathlib import Path

    from retrieval.qrels import load_qrels
    from retrieval.sims_io import query_id

    path = Path(qrels_file)
    if not path.is_file():
        return None
    query_ids = [query_id(c, k) for c in clip_ids for k in range(captions_per_clip)]
    qrels = load_qrels(path, query_ids=query_ids, doc_ids=list(clip_ids))
    return {"file": str(path), "graded": not qrels.is_binary(), **qrels_both_directions(sims, qrels)}
