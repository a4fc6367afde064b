"""The QPP pipeline on one run folder: targets → features → models → evaluation → weights → fusion.

``run_qpp(run_dir, ...)`` is what ``qpp.py`` calls; docs/QPP.md explains the protocol. Outputs go to
``<run>/qpp/`` (``predictions.csv``, ``weights.npy`` + ``weights.json``, ``results.json``, ``results.md``, plots),
written by qpp/report.py. The fork's recipe is qpp/fork.py; a synthetic run folder for tests is qpp/synthetic_run.py.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from tqdm import tqdm

from qpp.evaluate import evaluate
from qpp.features import SplitFeatures, build_matrix, expand_groups
from qpp.fusion_eval import fusion_report
from qpp.models import LTR_MODEL, MODELS, fit_predict, group_folds
from qpp.report import write_outputs
from qpp.run_inputs import check_captions, load_split, parse_list
from qpp.targets import HIGHER_IS_BETTER, TARGETS, badness, compute_targets
from qpp.weight_selection import select_weights
from qpp.weights import MAPPINGS, weights_from_predictions
from utils.errors import UserError
from utils.outputs import check_target, output_set

WRITER = "qpp.py"  # the writer recorded in complete.json: --out may replace only a set of this writer
QPP_KEEP = ("cache", "fork", "input")  # sub-folders of <run>/qpp/ that are not part of its output set (kept across re-runs; input: a TREC run materialised by qpp.py --trec-run)

DEFAULT_FEATURES = ("lexical", "score", "variation")
WEIGHT_MODEL_CANDIDATES = ("linear", "xgboost")  # cheap and strong; --weights-model pins one
FIT_SPLITS = ("val", "train")


def run_qpp(run_dir: str | Path, *, fit_split: str = "val", cv: int | None = None,
            features: Sequence[str] = DEFAULT_FEATURES, models: Sequence[str] = MODELS, ltr: bool = False,
            seed: int = 0, target: str = "log2_rank", weights_model: str | None = None, mapping: str = "auto",
            temperature: float | None = None, device: str = "cpu", out_dir: str | Path | None = None,
            n_resamples: int = 10_000, plots: bool = True, log: Callable[[str], None] = print,
            progress: bool = True) -> dict:
    """Fit QPP predictors, evaluate them on test against chance, write weights and fuse. Returns results.json."""
    from qpp.features import FEATURE_GROUPS

    t_start = time.time()
    run_dir = Path(run_dir)
    groups = parse_list(features, FEATURE_GROUPS, "feature group")
    models = parse_list(models, MODELS, "model")
    if target not in TARGETS:
        raise UserError(f"unknown target {target}; valid: {', '.join(TARGETS)}")
    if mapping not in ("auto",) + MAPPINGS:
        raise UserError(f"unknown weight mapping {mapping}; valid: auto, {', '.join(MAPPINGS)}")
    if fit_split not in FIT_SPLITS:
        raise UserError(f"unknown fit split {fit_split}; valid: {', '.join(FIT_SPLITS)}")
    all_models = models + ([LTR_MODEL] if ltr else [])
    if weights_model and weights_model not in all_models:
        raise UserError(f"--weights-model {weights_model} is not among the models run ({', '.join(all_models)})")
    # candidates for the fusion weights; the one used is selected on the fitting side (never on test)
    wmodels = [weights_model] if weights_model else [m for m in WEIGHT_MODEL_CANDIDATES if m in all_models] or all_models[:1]
    blocks_all = expand_groups(groups)
    out = Path(out_dir) if out_dir else run_dir / "qpp"
    check_target(out, QPP_KEEP, writer=WRITER)  # before any work: --out must be a folder this stage may replace
    cache = out / "cache"

    ev_sims, ev_man = load_split(run_dir, "test")
    k = ev_man.captions_per_clip
    check_captions(ev_man, "test", blocks_all, run_dir)
    if cv:
        fit_sims, fit_man = ev_sims, ev_man
        protocol = f"cross-fitting on test, {cv} folds grouped by clip (GroupKFold)"
    else:
        fit_sims, fit_man = load_split(run_dir, fit_split)
        check_captions(fit_man, fit_split, blocks_all, run_dir)
        if fit_man.captions_per_clip != k:
            raise UserError(f"{run_dir}/sims/{fit_split}.json: captions_per_clip {fit_man.captions_per_clip} != "
                            f"test's {k}")
        protocol = (f"fit on {fit_split} ({'in-sample: the model trained on these queries' if fit_split == 'train' else 'queries unseen in training'}), "
                    "evaluate on test")
    n_ev = len(ev_man.clip_ids)
    if cv is not None and not 2 <= cv <= n_ev:
        raise UserError(f"--cv {cv}: must be between 2 and the number of test clips ({n_ev})")
    log(f"qpp: run {run_dir} | test {len(ev_man.query_ids)} queries x {n_ev} clips | {protocol}")

    tg_ev = compute_targets(ev_sims, ev_man.gt_cols())
    y_ev = badness(tg_ev[target], target)
    _check_targets_vary(tg_ev, target, run_dir, "test", n_ev)
    tg_fit = tg_ev if cv else compute_targets(fit_sims, fit_man.gt_cols())
    y_fit = badness(tg_fit[target], target)
    if not cv:
        _check_targets_vary(tg_fit, target, run_dir, fit_split, len(fit_man.clip_ids))

    sf_ev = SplitFeatures(ev_sims, ev_man.captions, k, cache, device)
    sf_fit = sf_ev if cv else SplitFeatures(fit_sims, fit_man.captions, k, cache, device)
    if cv:
        folds = group_folds(n_ev, cv, k, seed)
    else:
        folds = [(np.arange(len(fit_man.query_ids)), np.arange(len(ev_man.query_ids)))]
    _check_folds(folds, k)

    feature_sets = [(g,) for g in groups] + ([tuple(groups)] if len(groups) > 1 else [])
    wfeat = "+".join(feature_sets[-1])  # the column written as pred_<model> in predictions.csv
    timings: dict[str, float] = {}
    preds: dict[tuple[str, str], np.ndarray] = {}
    for fset in feature_sets:
        fname = "+".join(fset)
        blocks = expand_groups(fset)
        t0 = time.time()
        mats = [build_matrix(blocks, sf_fit, fr, sf_ev, er, seed) for fr, er in folds]
        timings[f"features:{fname}"] = time.time() - t0
        for m in tqdm(all_models, desc=f"fit {fname}", unit="model", leave=False,
                      disable=not progress or not sys.stderr.isatty(),  # a bar is for a person at a terminal
                      file=sys.stderr):
            t0 = time.time()
            p = np.empty(len(y_ev))
            for (fr, er), (xf, xe, _) in zip(folds, mats):
                p[er] = fit_predict(m, xf, y_fit[fr], xe, k, seed)
            preds[(fname, m)] = p
            timings[f"fit:{fname}:{m}"] = time.time() - t0
        log(f"  features {fname:<28} dim {mats[0][0].shape[1]:>4}  ({sum(v for kk, v in timings.items() if fname in kk.split(':')):.1f}s)")

    results = {(f, m): evaluate(y_ev, p, k) for (f, m), p in preds.items()}

    # ---- weights: predictor (feature set x model) and temperature selected on the fitting side only
    t0 = time.time()
    log(f"  choosing the weights' predictor, mapping and temperature on {fit_split if not cv else 'the fitting folds'}"
        " (cross-fitted) ...")
    pred_w = np.empty(len(y_ev))
    temps_used, tuning, chosen, mappings_used = [], [], [], []
    weights = np.empty(len(y_ev), dtype=np.float32)
    for fr, er in folds:
        (m_fold, t_fold), (wf, wm), table = select_weights(sf_fit, fit_sims, y_fit, fr, k, feature_sets, wmodels,
                                                           mapping, temperature, seed)
        tuning.append(table)
        chosen.append((wf, wm))
        temps_used.append(t_fold)
        mappings_used.append(m_fold)
        pred_w[er] = preds[(wf, wm)][er]
        weights[er] = weights_from_predictions(pred_w[er], k, m_fold, t_fold if m_fold == "softmax" else 1.0)
    timings["weights_selection"] = time.time() - t0
    temps_json = [t if np.isfinite(t) else ("inf" if t > 0 else None) for t in temps_used]
    t_report = temps_json[0] if len(set(map(str, temps_json))) == 1 else temps_json  # "inf" = plain CombSum
    w_mapping = _same_or_list(mappings_used)
    w_feat = _same_or_list([c[0] for c in chosen])
    w_model = _same_or_list([c[1] for c in chosen])

    fusion = fusion_report(ev_sims, k, y_ev, pred_w, weights, temps_used, folds, n_resamples, seed)

    # ---- write
    res_json = {
        "run": str(run_dir), "split": "test", "queries": len(y_ev), "clips": n_ev, "captions_per_clip": k,
        "protocol": {"fit_split": None if cv else fit_split, "cv": cv, "description": protocol, "seed": seed},
        "target": target, "target_higher_is_better": HIGHER_IS_BETTER[target],
        "features": groups, "models": {m: results[(wfeat, m)] for m in all_models},
        "by_features": {f: {m: results[(f, m)] for m in all_models} for f in ("+".join(s) for s in feature_sets)},
        "weights": {"model": w_model, "features": w_feat, "mapping": w_mapping, "temperature": t_report,
                    "selection": tuning},
        "fusion": fusion, "timings_s": {kk: round(v, 3) for kk, v in timings.items()},
    }
    with output_set(out, writer=WRITER, keep=QPP_KEEP) as tmp:  # complete-or-refuse (utils/outputs.py)
        write_outputs(tmp, out, res_json, ev_man, k, tg_ev[target], target, preds, wfeat, weights, run_dir, plots,
                      feature_sets, all_models, results, y_ev, t_start, log)
    log(f"qpp: wrote {out} ({res_json['timings_s']['total']:.1f}s)")
    return res_json


def _check_targets_vary(tg: dict, target: str, run_dir: Path, split: str, n_clips: int) -> None:
    """Refuse a split on which every caption query is equally good: there is nothing to predict (test) or to learn
    from (the fitting split), and every metric of a prediction would be undefined or trivially perfect."""
    values, rank0 = tg[target], tg["rank0"]
    if values.size == 0 or np.any(values != values[0]):
        return
    if np.all(rank0 == rank0[0]):
        where = ("a single clip, which every caption ranks first" if n_clips == 1 else
                 f"every caption ranks its clip at {rank0[0] + 1:g} of {n_clips}")
    else:
        where = f"every caption's clip is {'' if values[0] else 'not '}in its top 10"
    raise UserError(f"qpp: the {split} targets are all equal ({run_dir / 'sims' / (split + '.npy')}: {target} = "
                    f"{values[0]:.6g} for all {values.size} caption queries; {where}): "
                    f"nothing to {'predict' if split == 'test' else 'learn from'}")


def _check_folds(folds, k: int) -> None:
    """Captions of one clip never straddle the fit/eval boundary (rows are clip-major)."""
    for fr, er in folds:
        for rows in (fr, er):
            g = np.asarray(rows).reshape(-1, k) if len(rows) % k == 0 else None
            if g is None or not np.all(g == g[:, :1] + np.arange(k)) or np.any(g[:, 0] % k):
                raise AssertionError("a fold splits the captions of a clip")


def _same_or_list(values: list):
    return values[0] if len(set(values)) == 1 else values
