"""QPP weights for NEW phrasings of one need (``search.py --fusion qpp``), from a run's complete QPP stage.

The stage's ``qpp/weights.npy`` holds weights for the run's own test captions only; a typed phrasing has none. So
the predictor that the stage selected (``qpp/weights.json``: feature set, model, mapping, temperature) is fitted
again on the stage's fitting split (``results.json`` → ``protocol.fit_split``; test when it cross-fitted), exactly
as the stage fitted it, and predicts the badness of each phrasing from the same features computed on the
phrasings: their MiniLM / lexical text features, their score rows over the searched clips, and their agreement
with each other (the P phrasings play the role of a clip's K captions). The weights then follow the stage's mapping
and temperature over the P phrasings. A temperature of ``inf`` means the stage found plain CombSum best: uniform
weights, no refit. Caveat: score features of a phrasing are computed over the searched split's clips, which may be
more or fewer than the fitting split's (docs/SEARCH.md).
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from qpp.features import SplitFeatures, build_matrix, expand_groups
from qpp.models import fit_predict
from qpp.targets import badness, compute_targets
from qpp.weights import weights_from_predictions
from retrieval.sims_io import load_sims
from utils.errors import UserError
from utils.io import read_json


def require_qpp_stage(run_dir: str | Path) -> Path:
    """The run's QPP stage folder; ``UserError`` naming it when qpp.py has not completed there (checked before
    search.py builds an index, not after)."""
    from utils.outputs import require_complete

    qdir = Path(run_dir) / "qpp"
    if not (qdir / "weights.json").is_file() or not (qdir / "results.json").is_file():
        raise UserError(f"{qdir}: no complete QPP stage (weights.json + results.json): run "
                        f"python qpp.py --run {run_dir} first, or use --fusion combsum / rrf")
    require_complete(qdir, ["weights.json", "results.json"], rerun=f"qpp.py --run {run_dir}")  # as fusion.py does
    return qdir


def phrasing_weights(run_dir: str | Path, sims: np.ndarray, phrasings: Sequence[str],
                     seed: int = 0) -> tuple[np.ndarray, str]:
    """``(P,)`` float32 weights (sum 1, higher = predicted better) for the ``(P, N)`` phrasing scores, and a note."""
    run_dir = Path(run_dir)
    qdir = require_qpp_stage(run_dir)
    chosen = read_json(qdir / "weights.json")
    protocol = read_json(qdir / "results.json").get("protocol", {})
    fields = {key: chosen.get(key) for key in ("model", "features", "mapping", "temperature", "target")}
    listed = [key for key, v in fields.items() if isinstance(v, list)]
    if listed:
        raise UserError(f"{qdir / 'weights.json'}: {', '.join(listed)} differ per fold (qpp.py --cv); rerun qpp.py "
                        "without --cv to get one predictor for new phrasings")
    p = sims.shape[0]
    mapping, temp = fields["mapping"], fields["temperature"]
    if mapping == "softmax" and temp == "inf":
        return np.full(p, 1.0 / p, np.float32), ("qpp: the run's QPP stage chose temperature inf (uniform weights), "
                                                 "so this is plain CombSum")
    if mapping not in ("softmax", "rank", "fork"):
        raise UserError(f"{qdir / 'weights.json'}: unknown mapping {mapping!r}")
    fit_split = protocol.get("fit_split") or "test"
    npy = run_dir / "sims" / f"{fit_split}.npy"
    if not npy.is_file():
        raise UserError(f"{npy}: missing (the QPP stage was fitted on it)")
    fit_sims, fit_man = load_sims(run_dir, fit_split)
    fit_sims = np.asarray(fit_sims, dtype=np.float32)
    k = fit_man.captions_per_clip
    y = badness(compute_targets(fit_sims, fit_man.gt_cols())[fields["target"]], fields["target"])
    blocks = expand_groups(str(fields["features"]).split("+"))
    fit = SplitFeatures(fit_sims, fit_man.captions, k, qdir / "cache")
    new = SplitFeatures(np.asarray(sims, dtype=np.float32), list(phrasings), p)
    x_fit, x_new, _ = build_matrix(blocks, fit, np.arange(len(y)), new, np.arange(p), seed)
    pred = fit_predict(fields["model"], x_fit, y, x_new, k, seed)
    t = float(temp) if mapping == "softmax" else 1.0
    w = weights_from_predictions(pred, p, mapping, t)
    note = (f"qpp weights {', '.join(f'{x:.3f}' for x in w)}: {fields['model']} on {fields['features']} refitted on "
            f"the run's {fit_split} captions, mapping {mapping}" + (f", T={t:g}" if mapping == "softmax" else ""))
    return w, note
