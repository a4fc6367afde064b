"""The ``variation`` block: how each caption's score row agrees with the other K-1 captions of its clip.

Query variations are legitimate in the fusion setting (all K captions are there at query time); the ground truth is
never used. Vectorised over blocks of clips (``einsum`` over ``(G, K, N)``).
"""
from __future__ import annotations

import numpy as np

from fusion.normalize import NumpyOps
from retrieval.metrics import _row_block

VARIATION_NAMES = ["overlap_top10", "overlap_top50", "spearman_others", "pearson_loo_centroid",
                   "pearson_full_centroid", "top1_agree", "pseudo_log2_rank", "pseudo_z"]


def variation_features(sims: np.ndarray, k: int) -> np.ndarray:
    """Agreement of each caption's score row with the other ``k−1`` captions of its clip, ``(Q, 8)``.

    Rows are clip-major (rows ``g·k .. g·k+k−1`` belong to clip ``g``). For caption ``i`` of a clip, with ``j ≠ i``
    its siblings and ``c_i = (Σ_j s_j) / (k−1)`` the leave-one-out centroid row:
    overlap_topm = mean_j |top_m(s_i) ∩ top_m(s_j)| / m (m ∈ {10, 50}); spearman_others = mean_j Spearman(s_i, s_j);
    pearson_loo_centroid = Pearson(s_i, c_i); pearson_full_centroid = Pearson(s_i, mean of all k rows);
    top1_agree = share of siblings whose top-1 clip equals caption i's; pseudo_log2_rank = log2(1 + 0-based
    tie-averaged rank, in s_i, of the clip ``argmax c_i``) (pseudo-relevance: the clip the siblings agree on);
    pseudo_z = z-score of that clip in s_i.
    The ground truth is never used.
    """
    n_q, n_c = sims.shape
    if n_q % k:
        raise ValueError(f"{n_q} rows is not a multiple of captions_per_clip={k}")
    out = np.empty((n_q, len(VARIATION_NAMES)), dtype=np.float64)
    if k < 2:
        out[:] = 0.0
        return out
    groups_per_block = max(1, _row_block(n_c, per_cell=48) // k)
    m10, m50 = min(10, n_c), min(50, n_c)
    eye = np.eye(k, dtype=bool)
    for g0 in range(0, n_q // k, groups_per_block):
        rows = slice(g0 * k, min(n_q, (g0 + groups_per_block) * k))
        s = np.asarray(sims[rows], dtype=np.float64)
        g = s.shape[0] // k
        s3 = s.reshape(g, k, n_c)
        feats = []
        for m in (m10, m50):
            member = np.zeros(s.shape, dtype=np.float32)
            np.put_along_axis(member, _topk_indices(s, m), 1.0, axis=1)
            member = member.reshape(g, k, n_c)
            inter = np.einsum("gin,gjn->gij", member, member)
            inter[:, eye] = 0.0
            feats.append((inter.sum(axis=2) / (k - 1) / m).ravel())
        # Spearman = Pearson of row ranks (one sort per row; the rank direction does not change a correlation)
        r = _ROW_OPS.ranks(np.asarray(sims[rows]))
        feats.append(_mean_sibling_corr(r.reshape(g, k, n_c), eye, k))
        zc = _center_unit(s3)
        total = s3.sum(axis=1, keepdims=True)
        loo = (total - s3) / (k - 1)
        feats.append(np.einsum("gin,gin->gi", zc, _center_unit(loo)).ravel())
        feats.append(np.einsum("gin,gin->gi", zc, _center_unit(total)).ravel())
        top1 = s.argmax(axis=1).reshape(g, k)
        same = top1[:, :, None] == top1[:, None, :]
        same[:, eye] = False
        feats.append((same.sum(axis=2) / (k - 1)).ravel())
        pseudo = loo.reshape(-1, n_c).argmax(axis=1)
        sp = s[np.arange(s.shape[0]), pseudo][:, None]
        rank0 = np.count_nonzero(s > sp, axis=1) + (np.count_nonzero(s == sp, axis=1) - 1) / 2.0
        feats.append(np.log2(rank0 + 1.0))
        mu, sd = s.mean(axis=1), s.std(axis=1)
        feats.append((sp[:, 0] - mu) / np.where(sd > 0, sd, 1.0))
        out[rows] = np.column_stack(feats)
    return out


_ROW_OPS = NumpyOps()


def _center_unit(a: np.ndarray) -> np.ndarray:
    c = a - a.mean(axis=-1, keepdims=True)
    norm = np.linalg.norm(c, axis=-1, keepdims=True)
    return c / np.where(norm > 0, norm, 1.0)


def _mean_sibling_corr(a3: np.ndarray, eye: np.ndarray, k: int) -> np.ndarray:
    u = _center_unit(a3)
    corr = np.einsum("gin,gjn->gij", u, u)
    corr[:, eye] = 0.0
    return (corr.sum(axis=2) / (k - 1)).ravel()


def _topk_indices(arr: np.ndarray, k: int) -> np.ndarray:
    if k < arr.shape[1]:
        return np.argpartition(-arr, k - 1, axis=1)[:, :k]
    return np.tile(np.arange(arr.shape[1]), (arr.shape[0], 1))
