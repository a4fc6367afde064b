"""Multi-relevance evaluation of fusion's caption-level rankings: ``fusion.py --eval-qrels FILE``.

The manifest's qrels say one relevant clip per caption query (its own clip). A TREC qrels file (binary or graded,
several relevant clips per query; query ids ``<clip>#<k>``) judges the caption queries more fully, as the DCASE
task does. Only rows that are caption queries can be scored with it (the unfused per-caption baseline of each
system, the system-fused caption matrices): a fused clip-level query has no caption judgements, so it is left out
rather than given an invented relevance. Metrics: :func:`retrieval.qrels_metrics.qrels_metrics` (text-to-audio).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from retrieval.qrels import Qrels, load_qrels
from retrieval.qrels_metrics import qrels_metrics
from retrieval.sims_io import SimsManifest
from utils.errors import UserError

COLUMNS = ("R1", "R5", "R10", "mAP10", "mAP16", "nDCG10", "MRR")
NOTE = ("Multi-relevance metrics (text-to-audio, percent) of the caption-query rows only, from the qrels file: a hit "
        "is any relevant clip; mAP@k, nDCG@k, MRR as in docs/METRICS.md; means over the caption queries the file "
        "judges (queries column). Fused clip-level queries (the captions of "
        "a clip fused into one query) have no caption judgements and are not scored here.")


def add_argument(p) -> None:
    p.add_argument("--eval-qrels", dest="eval_qrels", metavar="FILE",
                   help="TREC qrels (binary or graded, several relevant clips per caption query; query ids "
                   "<clip>#<k>) to score the caption-query rows with multi-relevance metrics as well "
                   "(R1/R5/R10, mAP10, mAP16, nDCG10, MRR): results.json 'multi_relevance', a table in results.md")


def load_eval_qrels(path: str | None, manifest: SimsManifest) -> Qrels | None:
    """The file aligned to the manifest's caption rows and clip columns; unknown ids -> UserError naming the file."""
    if path is None:
        return None
    if not Path(path).is_file():
        raise UserError(f"--eval-qrels {path}: file not found")
    qrels = load_qrels(path, manifest)
    if not (qrels.n_relevant() > 0).any():
        raise UserError(f"{path}: no caption query has a relevant clip (grade > 0)")
    return qrels


def row_metrics(sims: np.ndarray, qrels: Qrels) -> dict[str, float]:
    """The multi-relevance summary of one caption-level ``(K*N, N)`` matrix."""
    return qrels_metrics(sims, qrels, "t2a")


def block(path: str, qrels: Qrels, rows: dict[str, dict]) -> dict:
    """``results.json["multi_relevance"]``."""
    return {"file": str(path), "graded": not qrels.is_binary(), "direction": "t2a",
            "judged_queries": int((qrels.n_relevant() > 0).sum()),
            "mean_relevant": float(qrels.n_relevant()[qrels.n_relevant() > 0].mean()), "rows": rows, "note": NOTE}


def to_markdown(results: dict) -> str:
    """The extra results.md table ('' when --eval-qrels was not given)."""
    mr = results.get("multi_relevance")
    if not mr:
        return ""
    out = ["", f"## Multi-relevance ({mr['file']}; {'graded' if mr['graded'] else 'binary'}, "
           f"{mr['judged_queries']} judged caption queries, {mr['mean_relevant']:.2f} relevant clips each on average)",
           "", "| caption-query row | queries | " + " | ".join(COLUMNS) + " |", "|---|---:|" + "---:|" * len(COLUMNS)]
    for name, m in mr["rows"].items():
        out.append(f"| {name} | {m['n_queries']} | " + " | ".join(f"{m[c]:.2f}" for c in COLUMNS) + " |")
    return "\n".join(out + ["", mr["note"], ""])
