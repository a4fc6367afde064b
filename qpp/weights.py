"""From QPP predictions to per-caption fusion weights (docs/QPP.md §Weights).

Weights are per query row of a clip-major ``(K·N, N)`` matrix, **higher = predicted better**, and sum to 1 within each
clip (so weighted CombSum with uniform weights ranks exactly like CombSum).

* ``softmax`` (default): ``w_i = exp(−p_i / T) / Σ_j exp(−p_j / T)`` over the clip's K captions, ``p`` the predicted
  badness (log2-rank, or −rr / −hit10), ``T`` the temperature (``T → ∞`` = uniform = CombSum, ``T → 0`` = the
  predicted-best caption alone). ``T`` is tuned on the *fitting* split's cross-fitted predictions (never on test).
* ``rank``: ``w ∝ K + 1 − r`` with r the predicted 1-based rank in the clip (1 = predicted best) — the fork's intended
  linear mapping, in the right direction. r is tie-averaged: captions with equal predictions share one weight (the
  caption order never decides; a constant predictor gives CombSum's uniform weights).
* ``fork``: ``w = r / Σ r = r / 15`` — what the fork did: the predicted-**worst** caption gets the largest weight (bug).
"""
from __future__ import annotations

import numpy as np
from scipy import stats

from fusion.methods import combsum, rrf, weighted_combsum  # noqa: F401  (re-exported for the QPP pipeline)
from qpp.evaluate import group_ranks
from retrieval.metrics import gt_ranks_t2a, metrics_from_ranks

MAPPINGS = ("softmax", "rank", "fork")
DEFAULT_TEMPERATURES = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0, float("inf"))


def weights_from_predictions(pred_bad: np.ndarray, k: int, mapping: str = "softmax",
                             temperature: float = 1.0) -> np.ndarray:
    """Per-row float32 weights ``(K·N,)`` in row order; each clip's K weights sum to 1."""
    p = np.asarray(pred_bad, dtype=np.float64).reshape(-1, k)
    if mapping == "softmax":
        if not np.isfinite(temperature):
            w = np.full(p.shape, 1.0 / k)
        else:
            if temperature <= 0:
                raise ValueError("temperature must be > 0")
            with np.errstate(over="ignore", invalid="ignore"):
                a = -p / temperature
                a -= a.max(axis=1, keepdims=True)
                if not np.isfinite(a).all():  # a tiny temperature overflowed p / T: the differences do not
                    a = -(p - p.min(axis=1, keepdims=True)) / temperature
            w = np.exp(a)
            w /= w.sum(axis=1, keepdims=True)
    elif mapping == "rank":
        r = stats.rankdata(p, axis=1)  # 1-based, ties averaged: equal predictions get equal weights
        w = k + 1 - r
        w /= w.sum(axis=1, keepdims=True)
    elif mapping == "fork":
        r = group_ranks(p, k).astype(np.float64)
        w = r / r.sum(axis=1, keepdims=True)
    else:
        raise ValueError(f"unknown weight mapping {mapping!r}; valid: {', '.join(MAPPINGS)}")
    return w.ravel().astype(np.float32)


def fused_ranks(fused: np.ndarray) -> np.ndarray:
    """0-based tie-averaged rank of each clip's own column in a fused ``(N, N)`` matrix (GT on the diagonal)."""
    return gt_ranks_t2a(fused, np.arange(fused.shape[0]))


def tune_temperature(pred_bad: np.ndarray, sims: np.ndarray, k: int, temperatures=DEFAULT_TEMPERATURES,
                     criterion: str = "mAP10") -> tuple[float, dict]:
    """Pick the temperature whose QPP-weighted CombSum has the best ``criterion`` on ``sims`` (a fitting split).

    ``pred_bad`` must be out-of-fold (cross-fitted) predictions for ``sims``' rows. Ties go to the larger temperature
    (closer to plain CombSum). Returns ``(T, {str(T): metrics})``.
    """
    table = {}
    best_t, best_v = float("inf"), -np.inf
    for t in sorted(temperatures, reverse=True):
        w = weights_from_predictions(pred_bad, k, "softmax", t)
        m = metrics_from_ranks(fused_ranks(weighted_combsum(sims, k, w)))
        table[str(t)] = m
        if m[criterion] > best_v + 1e-9:
            best_t, best_v = t, m[criterion]
    return best_t, table
