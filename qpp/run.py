"""The QPP pipeline on one run folder: targets → features → models → evaluation → weights → fusion.

``run_qpp(run_dir, ...)`` is what ``qpp.py`` calls; docs/QPP.md explains the protocol. Outputs go to
``<run>/qpp/`` (``predictions.csv``, ``weights.npy`` + ``weights.json``, ``results.json``, ``results.md``, plots).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from qpp.evaluate import METRIC_ORDER, evaluate, format_table
from qpp.features import NEEDS_CAPTIONS, SplitFeatures, build_matrix, expand_groups, sentence_embeddings
from qpp.models import LTR_MODEL, MODELS, fit_predict, fork_model, group_folds
from qpp.targets import HIGHER_IS_BETTER, TARGETS, badness, compute_targets
from qpp.weights import (DEFAULT_TEMPERATURES, MAPPINGS, combsum, fused_ranks, rrf, tune_temperature,
                         weighted_combsum, weights_from_predictions)
from retrieval.metrics import clip_major_gt_cols, gt_ranks_t2a, metrics_from_ranks, reciprocal_ranks
from retrieval.significance import paired_randomization_test
from retrieval.sims_io import SimsManifest, build_manifest, load_sims, save_sims
from utils.errors import UserError
from utils.io import atomic_path, save_npy, write_json, write_text
from utils.outputs import check_target, output_set

QPP_KEEP = ("cache", "fork", "input")  # sub-folders of <run>/qpp/ that are not part of its output set (kept across re-runs; input: a TREC run materialised by qpp.py --trec-run)

DEFAULT_FEATURES = ("lexical", "score", "variation")
WEIGHT_MODEL_CANDIDATES = ("linear", "xgboost")  # cheap and strong; --weights-model pins one
FIT_SPLITS = ("val", "train")
FUSED_METRICS = ("R1", "R5", "R10", "MedR", "mAP10")


# ------------------------------------------------------------------------------------------------ loading
def _load_split(run_dir: Path, split: str) -> tuple[np.ndarray, SimsManifest]:
    npy = run_dir / "sims" / f"{split}.npy"
    if not npy.is_file():
        hint = ("" if split == "test" else
                f" (dump it by training with trainer.dump_splits including \"{split}\", or use --cv K to "
                "cross-fit on test)")
        raise UserError(f"{npy}: missing{hint}")
    sims, man = load_sims(run_dir, split)
    k = man.captions_per_clip
    if k < 2:
        raise UserError(f"{npy}: captions_per_clip is {k}; QPP needs several captions per clip")
    if not np.array_equal(man.gt_cols(), clip_major_gt_cols(len(man.clip_ids), k)):
        raise UserError(f"{npy}: rows are not clip-major (row r must be caption r mod {k} of clip r div {k})")
    return np.asarray(sims, dtype=np.float32), man


def _check_captions(man: SimsManifest, split: str, blocks: Sequence[str], run_dir: Path) -> None:
    if any(b in NEEDS_CAPTIONS for b in blocks) and len(man.captions) != len(man.query_ids):
        raise UserError(f"{run_dir / 'sims' / (split + '.json')}: manifest has no captions "
                        f"({len(man.captions)} for {len(man.query_ids)} queries); text features need them "
                        "(use --features score,variation)")


def parse_list(value: str | Sequence[str], valid: Sequence[str], what: str) -> list[str]:
    items = [v.strip() for v in (value.split(",") if isinstance(value, str) else value) if v.strip()]
    bad = [v for v in items if v not in valid]
    if bad or not items:
        raise UserError(f"unknown {what} {', '.join(bad) or '(empty)'}; valid: {', '.join(valid)}")
    return list(dict.fromkeys(items))


# ------------------------------------------------------------------------------------------------ pipeline
def run_qpp(run_dir: str | Path, *, fit_split: str = "val", cv: int | None = None,
            features: Sequence[str] = DEFAULT_FEATURES, models: Sequence[str] = MODELS, ltr: bool = False,
            seed: int = 0, target: str = "log2_rank", weights_model: str | None = None, mapping: str = "auto",
            temperature: float | None = None, device: str = "cpu", out_dir: str | Path | None = None,
            n_resamples: int = 10_000, plots: bool = True, log: Callable[[str], None] = print) -> dict:
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
    check_target(out, QPP_KEEP)  # before any work: --out must be a folder this stage may replace
    cache = out / "cache"

    ev_sims, ev_man = _load_split(run_dir, "test")
    k = ev_man.captions_per_clip
    _check_captions(ev_man, "test", blocks_all, run_dir)
    if cv:
        fit_sims, fit_man = ev_sims, ev_man
        protocol = f"cross-fitting on test, {cv} folds grouped by clip (GroupKFold)"
    else:
        fit_sims, fit_man = _load_split(run_dir, fit_split)
        _check_captions(fit_man, fit_split, blocks_all, run_dir)
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
    tg_fit = tg_ev if cv else compute_targets(fit_sims, fit_man.gt_cols())
    y_fit = badness(tg_fit[target], target)

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
        for m in all_models:
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
    pred_w = np.empty(len(y_ev))
    temps_used, tuning, chosen, mappings_used = [], [], [], []
    weights = np.empty(len(y_ev), dtype=np.float32)
    for fr, er in folds:
        (m_fold, t_fold), (wf, wm), table = _select_weights(sf_fit, fit_sims, y_fit, fr, k, feature_sets, wmodels,
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

    fusion = _fusion_report(ev_sims, k, y_ev, pred_w, weights, temps_used, folds, n_resamples, seed)

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
    with output_set(out, writer="qpp.py", keep=QPP_KEEP) as tmp:  # complete-or-refuse (utils/outputs.py)
        _write_outputs(tmp, out, res_json, ev_man, k, tg_ev[target], target, preds, wfeat, weights, run_dir, plots,
                       feature_sets, all_models, results, y_ev, t_start, log)
    log(f"qpp: wrote {out} ({res_json['timings_s']['total']:.1f}s)")
    return res_json


def _write_outputs(out, final_out, res_json, ev_man, k, target_vals, target, preds, wfeat, weights, run_dir, plots,
                   feature_sets, all_models, results, y_ev, t_start, log) -> None:
    w_model, w_feat = res_json["weights"]["model"], res_json["weights"]["features"]
    w_mapping, t_report = res_json["weights"]["mapping"], res_json["weights"]["temperature"]
    _write_predictions(out / "predictions.csv", ev_man, k, target_vals, target, preds, wfeat)
    save_npy(out / "weights.npy", weights)
    write_json(out / "weights.json", {"model": w_model, "features": w_feat, "mapping": w_mapping,
                                      "temperature": t_report, "target": target, "split": "test",
                                      "run": str(run_dir), "captions_per_clip": k,
                                      "query_ids": list(ev_man.query_ids)})
    rows = [(f, m, results[(f, m)]) for f in ("+".join(s) for s in feature_sets) for m in all_models]
    table = format_table(rows)
    ftable = _fusion_table(res_json["fusion"])
    if plots:
        from qpp.plot import plot_results
        best = max(rows, key=lambda r: np.nan_to_num(r[2]["kendall_tau_group_mean"], nan=-9))
        paths = plot_results(out, rows, y_ev, preds[(best[0], best[1])], f"{best[1]} [{best[0]}]", target)
        res_json["plots"] = [str(final_out / Path(p).name) for p in paths]  # where they are once swapped in
    res_json["timings_s"]["total"] = round(time.time() - t_start, 3)
    write_json(out / "results.json", res_json)
    write_text(out / "results.md", _markdown(res_json, table, ftable))
    log(table)
    log(ftable)


def _check_folds(folds, k: int) -> None:
    """Captions of one clip never straddle the fit/eval boundary (rows are clip-major)."""
    for fr, er in folds:
        for rows in (fr, er):
            g = np.asarray(rows).reshape(-1, k) if len(rows) % k == 0 else None
            if g is None or not np.all(g == g[:, :1] + np.arange(k)) or np.any(g[:, 0] % k):
                raise AssertionError("a fold splits the captions of a clip")


def _select_weights(sf: SplitFeatures, sims: np.ndarray, y: np.ndarray, rows: np.ndarray, k: int,
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


def _same_or_list(values: list):
    return values[0] if len(set(values)) == 1 else values


def _fusion_report(sims, k, y_true_bad, pred_bad, weights, temps, folds, n_resamples, seed) -> dict:
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


def _fusion_table(fusion: dict) -> str:
    cols = FUSED_METRICS + ("MRR",)
    head = f"{'fusion (' + str(fusion['queries']) + ' clip queries)':<34}" + "".join(f"{c:>9}" for c in cols)
    lines = [head, "-" * len(head)]
    base = fusion["baseline_per_caption"]
    lines.append(f"{'single caption (per-caption avg)':<34}" + "".join(
        f"{base.get(c, 100 * float('nan')):>9.2f}" if c in base else f"{'':>9}" for c in cols))
    for name, m in fusion["methods"].items():
        lines.append(f"{name:<34}" + "".join(f"{m[c]:>9.2f}" for c in cols))
    for name, s in fusion["significance"].items():
        lines.append(f"  {name}: mean RR diff {s['mean_rr_diff']:+.4f}, p = {s['p_value']:.4g}")
    return "\n".join(lines)


def _write_predictions(path: Path, man: SimsManifest, k: int, target_vals, target: str, preds, wfeat: str) -> None:
    import pandas as pd

    n = len(man.clip_ids)
    frame = pd.DataFrame({"clip": np.repeat(man.clip_ids, k), "caption_index": np.tile(np.arange(k), n),
                          "query_id": man.query_ids, "target": target_vals})
    sign = -1.0 if HIGHER_IS_BETTER[target] else 1.0  # predictions are stored in the target's own orientation
    for (f, m), p in preds.items():
        col = f"pred_{m}" if f == wfeat else f"pred_{m}[{f}]"
        frame[col] = sign * p
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False, float_format="%.6g")


def _markdown(res: dict, table: str, ftable: str) -> str:
    w = res["weights"]
    return (f"# QPP on {res['run']}\n\n- protocol: {res['protocol']['description']}\n- target: {res['target']}\n"
            f"- queries: {res['queries']} ({res['clips']} clips x {res['captions_per_clip']})\n"
            f"- weights: {w['mapping']} of model {w['model']} on [{w['features']}], temperature {w['temperature']} "
            "(predictor and temperature selected by fused mAP@10 on the fitting split)\n\n"
            f"## Prediction quality (test) vs the exact chance level\n\n```\n{table}\n```\n\n"
            f"## Fusion on test\n\n```\n{ftable}\n```\n")


# ------------------------------------------------------------------------------------------------ the fork's recipe
def run_fork(run_dir: str | Path, *, seed: int = 0, device: str = "cpu", out_dir: str | Path | None = None,
             n_resamples: int = 10_000, encoder: str | Path | None = None,
             log: Callable[[str], None] = print) -> dict:
    """The fork's QPP: MiniLM embeddings only, LR/MLP/GBR (+tree) with its settings, fit in-sample on train,
    log2 of ordinal (double-argsort) ranks, and its inverted r/15 weights for weighted CombSum."""
    t_start = time.time()
    run_dir = Path(run_dir)
    if not (run_dir / "sims" / "train.npy").is_file():
        raise UserError(f"{run_dir / 'sims' / 'train.npy'}: missing; --reproduce-fork fits in-sample on train like the "
                        "fork: train with trainer.dump_splits including \"train\" "
                        "(--custom_args 'trainer.dump_splits=[\"train\",\"val\",\"test\"]')")
    ev_sims, ev_man = _load_split(run_dir, "test")
    tr_sims, tr_man = _load_split(run_dir, "train")
    _check_captions(ev_man, "test", ["minilm"], run_dir)
    _check_captions(tr_man, "train", ["minilm"], run_dir)
    k = ev_man.captions_per_clip
    out = Path(out_dir) if out_dir else run_dir / "qpp" / "fork"
    check_target(out, ("cache",))
    y_tr = compute_targets(tr_sims, tr_man.gt_cols(), ordinal=True)["log2_rank"]
    tg_ev = compute_targets(ev_sims, ev_man.gt_cols(), ordinal=True)
    y_ev = tg_ev["log2_rank"]
    from qpp.features import DEFAULT_ENCODER
    enc_name = DEFAULT_ENCODER if encoder is None else f"{encoder} (user-supplied sentence-transformers model)"
    log(f"qpp --reproduce-fork: encoder {enc_name}; {len(tr_man.captions)} train + {len(ev_man.captions)} test "
        "captions ...")
    x_tr = sentence_embeddings(tr_man.captions, out.parent / "cache", device, encoder=encoder)
    x_ev = sentence_embeddings(ev_man.captions, out.parent / "cache", device, encoder=encoder)
    preds, results, fusion_rows = {}, {}, {}
    cs = fused_ranks(combsum(ev_sims, k))
    fusion_rows["combsum"] = metrics_from_ranks(cs)
    sig = {}
    for m in ("linear", "mlp", "gbr", "tree"):
        p = fit_predict(m, x_tr, y_tr, x_ev, k, seed, model=fork_model(m))
        preds[("minilm", m)] = p
        results[m] = evaluate(y_ev, p, k)
        for mapping in ("fork", "rank"):
            r = fused_ranks(weighted_combsum(ev_sims, k, weights_from_predictions(p, k, mapping)))
            name = f"{m}:{'fork_inverted_r/15' if mapping == 'fork' else 'corrected_(6-r)/15'}"
            fusion_rows[name] = metrics_from_ranks(r)
            sig[f"{name} vs combsum"] = paired_randomization_test(reciprocal_ranks(r), reciprocal_ranks(cs),
                                                                  n_resamples, seed)
    rows = [("minilm (fork)", m, results[m]) for m in results]
    table = format_table(rows)
    cols = FUSED_METRICS
    ftab = [f"{'fusion (fork recipe)':<36}" + "".join(f"{c:>9}" for c in cols)]
    for name, mm in fusion_rows.items():
        ftab.append(f"{name:<36}" + "".join(f"{mm[c]:>9.2f}" for c in cols)
                    + (f"   p vs combsum {sig[name + ' vs combsum']:.3g}" if name != "combsum" else ""))
    ftable = "\n".join(ftab)
    res = {"run": str(run_dir), "recipe": "fork: MiniLM only, in-sample fit on train, ordinal log2 ranks, r/15 weights",
           "encoder": enc_name,
           "models": results, "fusion": fusion_rows, "significance_p": sig, "timings_s": {"total": time.time() - t_start}}
    with output_set(out, writer="qpp.py --reproduce-fork", keep=("cache",)) as tmp:
        _write_predictions(tmp / "predictions.csv", ev_man, k, y_ev, "log2_rank", preds, "minilm")
        write_json(tmp / "results.json", res)
        write_text(tmp / "results.md", f"# The fork's QPP recipe on {run_dir}\n\nencoder: {enc_name}\n\n"
                                       f"```\n{table}\n```\n\n```\n{ftable}\n```\n")
    log(f"encoder: {enc_name}")
    log(table)
    log(ftable)
    return res


# ------------------------------------------------------------------------------------------------ dev helper
def make_synthetic_run(run_dir: str | Path, n_clips: dict[str, int] | None = None, k: int = 5, seed: int = 0,
                       dim: int = 32, signal: float = 0.6, complete: bool = True) -> Path:
    """A small run folder whose caption quality genuinely varies (for tests and demos).

    Each caption has a hidden quality q; its embedding is ``q·audio_clip + (1−q)·noise`` and its text mentions the
    clip's sound class more precisely when q is high, so text, score and variation features all carry signal.
    """
    rng = np.random.default_rng(seed)
    n_clips = n_clips or {"val": 60, "test": 80}
    run_dir = Path(run_dir)
    classes = ["dog", "rain", "car", "bird", "water", "door", "wind", "crowd", "engine", "bell", "train", "music"]
    good = ["loudly", "barking", "dripping", "passing", "chirping", "flowing", "slamming", "howling", "cheering"]
    vague = ["something", "some", "noise", "sound", "happens", "there", "thing"]
    for split, n in n_clips.items():
        audio = rng.normal(size=(n, dim))
        audio /= np.linalg.norm(audio, axis=1, keepdims=True)
        cls = rng.integers(0, len(classes), n)
        q = rng.beta(2, 2, size=(n, k))
        noise = rng.normal(size=(n, k, dim))
        noise /= np.linalg.norm(noise, axis=2, keepdims=True)
        text = signal * q[..., None] * audio[:, None, :] + (1 - signal * q[..., None]) * noise
        text /= np.linalg.norm(text, axis=2, keepdims=True)
        sims = (text.reshape(n * k, dim) @ audio.T).astype(np.float32)
        caps = []
        for i in range(n):
            row = []
            for j in range(k):
                if q[i, j] > 0.5:
                    words = ["a", classes[cls[i]]] + list(rng.choice(good, 1 + int(4 * q[i, j])))
                else:
                    words = list(rng.choice(vague, 2 + int(3 * (1 - q[i, j])))) + (["a", classes[cls[i]]] if rng.random() < 0.3 else [])
                row.append(" ".join(words))
            caps.append(row)
        man = build_manifest(split, [f"clip{i:04d}.wav" for i in range(n)], caps, {"synthetic_seed": seed}, k)
        save_sims(run_dir / "sims", split, sims, man)
    if complete:
        write_json(run_dir / "metrics.json", {"synthetic": True})
    return run_dir
