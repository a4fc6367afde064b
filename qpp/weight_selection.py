"""Choosing the fusion weights' predictor, mapping and temperature on the fitting side alone (never on test).

Used by qpp/run.py once per outer fold; docs/QPP.md §Weights explains why the choice is by fused quality.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from qpp.features import SplitFeatures, build_matrix, expand_groups
from qpp.models import fit_predict, group_folds
from qpp.weights import DEFAULT_TEMPERATURES, fused_ranks, tune_temperature, weighted_combsum, weights_from_predictions
from retrieval.metrics import metrics_from_ranks


def select_weights(sf: SplitFeatures, sims: np.ndarray, y: np.ndarray, rows: np.ndarray, k: int,
                   feature_sets, models: Sequence[str], mapping: str, temperature: float | None, seed: int,
                   criterion: str = "mAP10", n_inner: int = 3) -> tuple[tuple[str, float], tuple[str, str], dict]:
    """Choose the weights' predictor (feature set x model) and mapping on the fitting rows alone.

    Each candidate predictor is cross-fitted inside ``rows`` (whole clips, ``n_inner`` GroupKFold folds) and
    scored by the fused ``criterion`` of weighted CombSum on those clips' own sub-collection (their rows x their
    columns). Mapping candidates: ``softmax`` at each temperature (or the given one) and, with ``auto``, also
    ``rank``. Predictive accuracy is not the point: a caption that merely agrees with its clip's other captions
    is predicted good, yet up-weighting it adds no information to the fusion, so the selection is by fused
    quality. Ties keep the earlier candidate and the larger temperature (closer to plain CombSum).
    Returns ``((mapping, temperature), (feature set, model), table)``.
    """
    n_groups = len(rows) // k
    inner = group_folds(n_groups, min(n_inner, n_groups), k, seed + 1)
    clips = rows[::k] // k
    sub = sims[np.ix_(rows, clips)]
    temps = [temperature] if temperature is not None else DEFAULT_TEMPERATURES
    best, table = None, {}

    def fused(weights: np.ndarray) -> float:
        return metrics_from_ranks(fused_ranks(weighted_combsum(sub, k, weights)))[criterion]

    for fset in feature_sets:
        fname, blocks = "+".join(fset), expand_groups(fset)
        mats = [build_matrix(blocks, sf, rows[a], sf, rows[b], seed) for a, b in inner]
        for model in models:
            oof = np.empty(len(rows))
            for (a, b), (xf, xe, _) in zip(inner, mats):
                oof[b] = fit_predict(model, xf, y[rows[a]], xe, k, seed)
            scored = []
            if mapping in ("auto", "softmax"):
                t, by_t = tune_temperature(oof, sub, k, temps, criterion)
                scored.append((by_t[str(t)][criterion], ("softmax", t)))
            if mapping != "softmax":
                m = "rank" if mapping == "auto" else mapping
                scored.append((fused(weights_from_predictions(oof, k, m, 1.0)), (m, float("nan"))))
            for score, (m, t) in scored:
                table[f"{fname}|{model}|{m}"] = {"temperature": t if np.isfinite(t) else str(t), criterion: score}
                if best is None or score > best[0] + 1e-9:
                    best = (score, (m, t), (fname, model))
    return best[1], best[2], table
