"""The fork's QPP recipe reproduced end to end (``qpp.py --reproduce-fork``), for comparison with qpp/run.py.

docs/QPP.md §"What the fork did wrong" lists what it does differently; outputs go to ``<run>/qpp/fork/``.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

from qpp.caption_embeddings import DEFAULT_ENCODER, sentence_embeddings
from qpp.evaluate import evaluate, format_table
from qpp.models import fit_predict, fork_model
from qpp.report import FUSED_METRICS, write_predictions
from qpp.run_inputs import check_captions, load_split
from qpp.targets import compute_targets
from qpp.weights import combsum, fused_ranks, weighted_combsum, weights_from_predictions
from retrieval.metrics import metrics_from_ranks, reciprocal_ranks
from retrieval.significance import paired_randomization_test
from utils.errors import UserError
from utils.io import write_json, write_text
from utils.outputs import check_target, output_set

FORK_WRITER = "qpp.py --reproduce-fork"  # recorded in complete.json: --out may replace only a set of this writer


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
    ev_sims, ev_man = load_split(run_dir, "test")
    tr_sims, tr_man = load_split(run_dir, "train")
    check_captions(ev_man, "test", ["minilm"], run_dir)
    check_captions(tr_man, "train", ["minilm"], run_dir)
    k = ev_man.captions_per_clip
    out = Path(out_dir) if out_dir else run_dir / "qpp" / "fork"
    check_target(out, ("cache",), writer=FORK_WRITER)
    y_tr = compute_targets(tr_sims, tr_man.gt_cols(), ordinal=True)["log2_rank"]
    tg_ev = compute_targets(ev_sims, ev_man.gt_cols(), ordinal=True)
    y_ev = tg_ev["log2_rank"]
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
        p = fit_predict(m, x_tr, y_tr, x_ev, k, seed, model=fork_model(m, seed))
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
    with output_set(out, writer=FORK_WRITER, keep=("cache",)) as tmp:
        write_predictions(tmp / "predictions.csv", ev_man, k, y_ev, "log2_rank", preds, "minilm")
        write_json(tmp / "results.json", res)
        write_text(tmp / "results.md", f"# The fork's QPP recipe on {run_dir}\n\nencoder: {enc_name}\n\n"
                                       f"```\n{table}\n```\n\n```\n{ftable}\n```\n")
    log(f"encoder: {enc_name}")
    log(table)
    log(ftable)
    return res
