"""QPP-weighted CombSum on test beside CombSum, RRF, the fork's inverted weights and the oracle, with paired tests.

Its dict is ``results.json`` → ``fusion`` (docs/QPP.md §Weights); qpp/report.py prints it.
"""
from __future__ import annotations

import numpy as np

from qpp.weights import combsum, fused_ranks, rrf, weighted_combsum, weights_from_predictions
from retrieval.metrics import clip_major_gt_cols, gt_ranks_t2a, metrics_from_ranks, reciprocal_ranks
from retrieval.significance import paired_randomization_test


def fusion_report(sims, k, y_true_bad, pred_bad, weights, temps, folds, n_resamples, seed) -> dict:
    n = sims.shape[1]
    per_caption = metrics_from_ranks(gt_ranks_t2a(sims, clip_major_gt_cols(n, k)))
    fork_w = weights_from_predictions(pred_bad, k, "fork")
    t_oracle = next((t for t in temps if np.isfinite(t)), 1.0)
    oracle_w = weights_from_predictions(y_true_bad, k, "softmax", t_oracle)
    fused = {"combsum": combsum(sims, k), "rrf": rrf(sims, k), "qpp_weighted_combsum": weighted_combsum(sims, k, weights),
             "fork_inverted_weighted_combsum": weighted_combsum(sims, k, fork_w),
             "oracle_weighted_combsum": weighted_combsum(sims, k, oracle_w)}
    ranks = {name: fused_ranks(m) for name, m in fused.items()}
    rr = {name: reciprocal_ranks(r) for name, r in ranks.items()}
    sig = {}
    for a, b in (("qpp_weighted_combsum", "combsum"), ("qpp_weighted_combsum", "rrf"),
                 ("fork_inverted_weighted_combsum", "combsum")):
        sig[f"{a} vs {b}"] = {"mean_rr_diff": float(rr[a].mean() - rr[b].mean()),
                              "p_value": paired_randomization_test(rr[a], rr[b], n_resamples, seed)}
    return {"queries": n, "baseline_per_caption": per_caption,
            "methods": {name: {**metrics_from_ranks(r), "MRR": 100.0 * float(rr[name].mean())}
                        for name, r in ranks.items()},
            "significance": sig,
            "notes": "fused queries = one per clip (all K captions); significance: paired randomisation test on "
                     "per-clip reciprocal ranks (two-sided); oracle = softmax of the TRUE targets (upper bound, "
                     f"T={t_oracle}); fork_inverted = the fork's r/15 weights on the same predictions"}
