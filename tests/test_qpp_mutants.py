"""qpp.fusion_eval.fusion_report's numbers against independent references (which weights feed which method, the
oracle from the TRUE targets, the fork's r/15 weights, MRR without a cut-off): mutants swapping any of them
survived the end-to-end QPP tests, which check the report's structure."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from scipy.special import softmax

from qpp.fusion_eval import fusion_report
from retrieval.metrics import metrics_from_ranks

N, K = 15, 5


def _fused_ranks(fused: np.ndarray) -> np.ndarray:
    """Brute-force 0-based tie-averaged rank of clip i's own column in fused row i."""
    return np.array([np.sum(row > row[i]) + (np.sum(row == row[i]) - 1) / 2 for i, row in enumerate(fused)])


def test_fusion_report_methods_use_their_own_weights():
    rng = np.random.default_rng(0)
    clip = rng.standard_normal((N, 6))
    sims = ((np.repeat(clip, K, 0) + 5.0 * rng.standard_normal((N * K, 6))) @ clip.T).astype(np.float32)
    y_true = rng.normal(size=N * K)   # badness of each caption (lower = better)
    pred = rng.normal(size=N * K)     # its prediction: unrelated, so the oracle and the predictor differ
    weights = rng.dirichlet(np.ones(K), size=N).ravel().astype(np.float32)
    temps = (float("inf"), 0.5, 2.0)  # the oracle uses the first finite temperature
    res = fusion_report(sims, K, y_true, pred, weights, temps, None, 200, 0)

    x = sims.astype(np.float64).reshape(N, K, N)
    fork_r = np.array([stats.rankdata(g, method="ordinal") for g in pred.reshape(N, K)])
    per_caption_w = {"combsum": np.ones((N, K)), "qpp_weighted_combsum": weights.reshape(N, K),
                     "fork_inverted_weighted_combsum": fork_r / 15.0,
                     "oracle_weighted_combsum": softmax(-y_true.reshape(N, K) / 0.5, axis=1)}
    ranks = {}
    for name, w in per_caption_w.items():
        ranks[name] = _fused_ranks((x * w[:, :, None]).sum(axis=1))
        got = dict(res["methods"][name])
        assert got.pop("MRR") == pytest.approx(100 * np.mean(1 / (ranks[name] + 1)), rel=1e-9), name
        assert got == pytest.approx(metrics_from_ranks(ranks[name])), name
    assert max(r.max() for r in ranks.values()) >= 10  # MRR has no cut-off, unlike mAP@10
    assert len({res["methods"][n]["MRR"] for n in per_caption_w}) == 4  # the four weightings differ here
    sig = res["significance"]["qpp_weighted_combsum vs combsum"]
    diff = np.mean(1 / (ranks["qpp_weighted_combsum"] + 1)) - np.mean(1 / (ranks["combsum"] + 1))
    assert sig["mean_rr_diff"] == pytest.approx(diff, rel=1e-9)
