"""The files of a QPP run: ``predictions.csv``, ``weights.npy`` + ``weights.json``, ``results.json``, ``results.md``
and the plots (docs/QPP.md §Outputs), plus the printed tables.

Kept apart from the pipeline (qpp/run.py) so the fork's recipe (qpp/fork.py) writes predictions the same way.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from qpp.evaluate import format_table
from qpp.targets import HIGHER_IS_BETTER
from retrieval.sims_io import SimsManifest
from utils.io import atomic_path, save_npy, write_json, write_text

FUSED_METRICS = ("R1", "R5", "R10", "MedR", "mAP10")


def write_outputs(out, final_out, res_json, ev_man, k, target_vals, target, preds, wfeat, weights, run_dir, plots,
                  feature_sets, all_models, results, y_ev, t_start, log) -> None:
    w_model, w_feat = res_json["weights"]["model"], res_json["weights"]["features"]
    w_mapping, t_report = res_json["weights"]["mapping"], res_json["weights"]["temperature"]
    write_predictions(out / "predictions.csv", ev_man, k, target_vals, target, preds, wfeat)
    save_npy(out / "weights.npy", weights)
    write_json(out / "weights.json", {"model": w_model, "features": w_feat, "mapping": w_mapping,
                                      "temperature": t_report, "target": target, "split": "test",
                                      "run": str(run_dir), "captions_per_clip": k,
                                      "query_ids": list(ev_man.query_ids)})
    rows = [(f, m, results[(f, m)]) for f in ("+".join(s) for s in feature_sets) for m in all_models]
    table = format_table(rows)
    ftable = fusion_table(res_json["fusion"])
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


def fusion_table(fusion: dict) -> str:
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


def write_predictions(path: Path, man: SimsManifest, k: int, target_vals, target: str, preds, wfeat: str) -> None:
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
