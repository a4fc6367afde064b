"""Fusion of the K caption queries of each clip into one query per clip (docs/FUSION.md).

Input: a ``(Q, N)`` similarity matrix with ``Q = K·N`` caption queries. Output: ``(N, N)``, row ``i`` = the
fused query of clip ``i`` (the clip order of ``rows``, i.e. the columns' order). Each method is one
vectorised kernel over a chunk of clips ``x`` of shape ``(C, K, N)``; :func:`_fuse` walks the clips in
chunks of bounded memory (memmapped inputs work), so there is no Python loop over queries.

Inputs narrower than float32 (float16, ints) are computed in float32 at least. Every fused chunk is checked
finite: a non-finite result from finite input (float32 overflow, e.g. CombSum of scores near 3e38) raises
:class:`FusionOverflow` instead of being written or evaluated; the CLIs turn it into one line naming the file.

Notation for one clip, its caption rows ``k = 1..K`` and a candidate clip ``d``: ``s_k(d)`` the (optionally
normalised) score, ``r_k(d)`` the 1-based rank of ``d`` in row ``k`` (one sort; tied scores share the mean of
the per-rank values of their positions, as the metrics average ties), ``N`` the number of candidates.
"""
from __future__ import annotations

import numpy as np
from tqdm import tqdm

from fusion.normalize import NumpyOps, get_normalizer, get_ops, norm_min_max

_BLOCK_BYTES = 64 * 2**20  # bytes of input one chunk may hold; temporaries are a small multiple of it


class FusionOverflow(ValueError):
    """Fused scores (or the weights, in the compute dtype) are not finite: never written or evaluated."""

    def __init__(self, method: str, largest: float, dtype, weights_largest: float | None = None,
                 in_weights: bool = False):
        self.method, self.largest, self.dtype = method, float(largest), np.dtype(dtype).name
        self.weights_largest, self.in_weights = weights_largest, in_weights
        super().__init__(self.describe("the input"))

    def describe(self, source: str) -> str:
        """The one-line message, naming ``source`` (the file the scores came from)."""
        if self.in_weights:
            return (f"fusion: {self.method} of {source}: weights up to {self.weights_largest:.3g} are not finite "
                    f"in {self.dtype}; rescale the weights")
        weights = "" if self.weights_largest is None else f", weights up to {self.weights_largest:.3g}"
        if not np.isfinite(self.largest):
            return f"fusion: {self.method} of {source}: the scores are not finite (|score| up to {self.largest:g})"
        return (f"fusion: {self.method} of {source} overflows {self.dtype} (|score| up to {self.largest:.3g}"
                f"{weights}); rescale the similarity matrix")


def largest_abs(a) -> float:
    """max |a| without an |a| copy (NaN if ``a`` holds one)."""
    a = np.asarray(a)
    return float(np.maximum(a.max(), -a.min())) if a.size else 0.0


def _compute_dtype(dtype, requested):
    """The dtype a chunk is computed in: ``requested``, else the input's, but never narrower than float32."""
    if requested is not None:
        return requested
    dtype = np.dtype(dtype)
    return None if dtype.kind == "f" and dtype.itemsize >= 4 else np.promote_types(dtype, np.float32)


def group_rows(gt_cols: np.ndarray, n_clips: int, captions_per_clip: int) -> np.ndarray | None:
    """``(n_clips, K)`` query rows of each clip (in row order), or ``None`` when rows are already clip-major.

    ``gt_cols[q]`` is the column of query ``q``'s relevant clip (``SimsManifest.gt_cols()``). Raises
    ``ValueError`` naming the first column that does not have exactly ``K`` queries.
    """
    gt_cols = np.asarray(gt_cols, dtype=np.int64)
    counts = np.bincount(gt_cols, minlength=n_clips)
    bad = np.flatnonzero(counts != captions_per_clip)
    if bad.size:
        raise ValueError(f"column {bad[0]} has {counts[bad[0]]} queries, expected {captions_per_clip}")
    rows = np.argsort(gt_cols, kind="stable").reshape(n_clips, captions_per_clip)
    return None if np.array_equal(rows.ravel(), np.arange(rows.size)) else rows


def _fuse(sims, captions_per_clip: int, kernel, *, method: str = "fusion", rows=None, weights=None,
          device="cpu", dtype=np.float32, compute_dtype=None, chunk_clips=None, progress=False, desc=None):
    """Apply ``kernel(ops, x (C, K, N), w (C, K) | None) -> (C, N)`` to every chunk of clips.

    ``x`` keeps the input dtype (at least float32) unless ``compute_dtype`` is given; rank kernels work in
    float64 (``ops.ranks``). Raises :class:`FusionOverflow` on a non-finite weight or fused chunk.
    """
    k = captions_per_clip
    n_rows, n = sims.shape
    if rows is None:
        if n_rows % k:
            raise ValueError(f"{n_rows} rows is not a multiple of captions_per_clip={k}")
        n_clips = n_rows // k
    else:
        n_clips = rows.shape[0]
    if weights is not None:
        given = weights
        with np.errstate(over="ignore", invalid="ignore"):
            weights = np.asarray(weights, dtype=np.float32 if compute_dtype is None else compute_dtype)
        if not np.isfinite(weights).all():  # e.g. float64 1e300 -> float32 inf
            raise FusionOverflow(method, np.nan, weights.dtype, largest_abs(given), in_weights=True)
        weights = weights.reshape(n_clips, k) if rows is None else weights[rows]
    ops = get_ops(device)
    chunk = chunk_clips or max(1, _BLOCK_BYTES // (k * n * 4))
    out = np.empty((n_clips, n), dtype=dtype)
    with tqdm(total=n_clips, desc=desc or method, unit="clip", disable=not progress or n_clips <= chunk,
              leave=False) as bar:
        for start in range(0, n_clips, chunk):
            stop = min(start + chunk, n_clips)
            block = sims[start * k:stop * k] if rows is None else sims[rows[start:stop].ravel()]
            x = ops.asarray(block, _compute_dtype(block.dtype, compute_dtype)).reshape(stop - start, k, n)
            w = None if weights is None else ops.asarray(weights[start:stop])
            with np.errstate(over="ignore", invalid="ignore"):  # an overflow is refused just below
                out[start:stop] = ops.to_numpy(kernel(ops, x, w))
            if not np.isfinite(out[start:stop]).all():
                raise FusionOverflow(method, largest_abs(block), dtype,
                                     None if weights is None else largest_abs(weights[start:stop]))
            bar.update(stop - start)
    return out


# --------------------------------------------------------------------------------------------------------
# score-based methods: --norm applies to every caption row first (default none, like the fork)
# --------------------------------------------------------------------------------------------------------
def _reduce_normalised(sims, captions_per_clip: int, how: str, norm: str, opts: dict):
    """Normalise every caption row, then reduce the K rows of each clip with ``how`` (sum/max/min/median)."""
    f = get_normalizer(norm)
    return _fuse(sims, captions_per_clip, lambda ops, x, w: ops.reduce(f(ops, x), how, 1),
                 method={"sum": "combsum", "max": "combmax", "min": "combmin", "median": "combmed"}[how], **opts)


def combsum(sims, captions_per_clip, *, norm="none", **opts):
    """CombSum (Fox & Shaw 1994): ``S(d) = sum_k s_k(d)``. The fork's method (sum == mean for ranking)."""
    return _reduce_normalised(sims, captions_per_clip, "sum", norm, opts)


def combmax(sims, captions_per_clip, *, norm="none", **opts):
    """CombMAX: ``S(d) = max_k s_k(d)``."""
    return _reduce_normalised(sims, captions_per_clip, "max", norm, opts)


def combmin(sims, captions_per_clip, *, norm="none", **opts):
    """CombMIN: ``S(d) = min_k s_k(d)``."""
    return _reduce_normalised(sims, captions_per_clip, "min", norm, opts)


def combmed(sims, captions_per_clip, *, norm="none", **opts):
    """CombMED: ``S(d) = median_k s_k(d)`` (mean of the two middle values when K is even)."""
    return _reduce_normalised(sims, captions_per_clip, "median", norm, opts)


def combmnz(sims, captions_per_clip, *, norm="none", depth=100, **opts):
    """CombMNZ over the top-``depth`` lists: ``S(d) = n(d) * sum_{k: d in top_depth(k)} m_k(d)``.

    ``n(d)`` = number of caption rows that retrieve ``d`` in their top ``depth`` (every score tied with the
    ``depth``-th is retrieved: no column bias), ``m_k`` = min-max of the ``--norm``-normalised row, so every score is in [0, 1]
    (MNZ's multiplication needs non-negative scores; min-max is a no-op after min-max or rank). A clip no
    row retrieves scores 0. With ``depth >= N`` every row retrieves everything and MNZ == K x CombSum(min-max).
    """
    f = get_normalizer(norm)

    def kernel(ops: NumpyOps, x, w):
        retrieved = ops.top_k_mask(x, depth)
        scores = norm_min_max(ops, f(ops, x)) * retrieved
        return ops.reduce(scores, "sum", 1) * ops.reduce(retrieved * 1, "sum", 1)

    return _fuse(sims, captions_per_clip, kernel, method="combmnz", **opts)


def weighted_combsum(sims, captions_per_clip, weights, *, norm="none", **opts):
    """Weighted CombSum: ``S(d) = sum_k w_k s_k(d)``; ``weights`` has one value per query row (row order).

    Weights express predicted query QUALITY (higher = better). For the fork's inverted weights see
    :func:`fork_rank_weights`.
    """
    f = get_normalizer(norm)
    return _fuse(sims, captions_per_clip, lambda ops, x, w: ops.reduce(f(ops, x) * w[:, :, None], "sum", 1),
                 method="weighted_combsum", weights=weights, **opts)


# --------------------------------------------------------------------------------------------------------
# rank-based methods: ranks come from the raw scores (any --norm is monotone, so it would not change them)
# --------------------------------------------------------------------------------------------------------
def _per_rank(x, score_of_rank) -> np.ndarray:
    """A rank method's score for each 1-based rank 1..N (float64: equal rank sets give exactly equal sums)."""
    return score_of_rank(np.arange(1, x.shape[-1] + 1, dtype=np.float64))


def rrf(sims, captions_per_clip, *, k=60, **opts):
    """Reciprocal Rank Fusion (Cormack et al. 2009): ``S(d) = sum_k 1 / (k + r_k(d))``, k = 60 as in the fork."""
    return _fuse(sims, captions_per_clip,
                 lambda ops, x, w: ops.reduce(ops.rank_scatter(x, _per_rank(x, lambda r: 1.0 / (k + r))), "sum", 1),
                 method="rrf", **opts)


def borda(sims, captions_per_clip, **opts):
    """Borda count (Aslam & Montague 2001): ``S(d) = sum_k (N - r_k(d) + 1)``: N points for a first place, 1 for last."""
    def kernel(ops: NumpyOps, x, w):
        return ops.reduce(ops.rank_scatter(x, _per_rank(x, lambda r: x.shape[-1] + 1 - r)), "sum", 1)

    return _fuse(sims, captions_per_clip, kernel, method="borda", **opts)


def isr(sims, captions_per_clip, **opts):
    """Inverse Square Rank (Mourão et al. 2014): ``S(d) = sum_k 1 / r_k(d)^2``."""
    return _fuse(sims, captions_per_clip,
                 lambda ops, x, w: ops.reduce(ops.rank_scatter(x, _per_rank(x, lambda r: 1.0 / r ** 2)), "sum", 1),
                 method="isr", **opts)


def fork_rank_weights(predicted_ranks: np.ndarray, captions_per_clip: int) -> np.ndarray:
    """The fork's weights (docs/FUSION.md, its bug kept on purpose): ``w = r / (1 + 2 + ... + K)`` = ``r / 15`` for K=5.

    ``r`` in 1..K is the predicted within-clip rank, 1 = predicted BEST caption, so the predicted-best caption
    gets the SMALLEST weight (1/15) and the predicted-worst the largest (5/15). Raises ``ValueError`` on ranks
    outside 1..K or not integer.
    """
    r = np.asarray(predicted_ranks, dtype=np.float64)
    k = captions_per_clip
    bad = np.flatnonzero((r != np.round(r)) | (r < 1) | (r > k))
    if bad.size:
        raise ValueError(f"row {bad[0]} holds {float(r[bad[0]]):g}, not a within-clip rank in 1..{k}")
    return r / (k * (k + 1) / 2)
