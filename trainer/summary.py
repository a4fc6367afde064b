"""The mean (std) table over the seeds of one experiment: ``summary-<timestamp>.md`` and ``.json`` (train.py --seeds)."""
from __future__ import annotations

import datetime
import os
from pathlib import Path

import numpy as np

from retrieval.metrics import METRIC_KEYS
from trainer.run_log import MONITOR
from utils.io import read_json, write_json, write_text
from utils.paths import COMPLETE_MARKER, experiment_name


def summarise_runs(run_dirs: list[Path], save_dir: str | os.PathLike, config_path: str | os.PathLike
                   ) -> tuple[str, tuple[Path, Path]]:
    """Mean ± std over seeds of the test metrics (as the original README: sample std, ddof 1, for R@k/MedR/MeanR/mAP10;
    population std, ddof 0, for the geometric mean). Writes ``summary-<timestamp>.md`` and ``.json`` under
    ``<save_dir>/<experiment>/``; returns the markdown table and the two paths."""
    per_run = [read_json(Path(r) / COMPLETE_MARKER) for r in run_dirs]
    rows, table = {}, []
    header = "| dir | " + " | ".join(METRIC_KEYS) + " |"
    table += [header, "|" + "---|" * (len(METRIC_KEYS) + 1)]
    for direction in ("t2a", "a2t"):
        stats = {}
        for key in METRIC_KEYS:
            vals = np.array([m["test"][direction][key] for m in per_run], dtype=np.float64)
            ddof = 0 if key == MONITOR else 1
            std = float(np.std(vals, ddof=ddof)) if len(vals) > ddof else None
            stats[key] = {"mean": float(vals.mean()), "std": std, "ddof": ddof, "values": vals.tolist()}
        rows[direction] = stats
        cells = [f"{s['mean']:.1f} ({s['std']:.1f})" if s["std"] is not None else f"{s['mean']:.1f}"
                 for s in stats.values()]
        table.append(f"| {direction} | " + " | ".join(cells) + " |")
    exp = experiment_name(config_path)
    stamp = datetime.datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    root = Path(save_dir) / exp
    md_path, json_path = root / f"summary-{stamp}.md", root / f"summary-{stamp}.json"
    md = (f"# {exp}: test, mean (std) over seeds {[m['seed'] for m in per_run]}\n\n"
          "std: ddof 1 for R@k, MedR, MeanR, mAP10; ddof 0 for the geometric mean (as the original README).\n\n"
          + "\n".join(table) + "\n\nruns:\n" + "".join(f"- {r}\n" for r in run_dirs))
    write_text(md_path, md)
    write_json(json_path, {"experiment": exp, "seeds": [m["seed"] for m in per_run],
                           "runs": [str(r) for r in run_dirs], "test": rows,
                           "best_epochs": [m["best_epoch"] for m in per_run]})
    return "\n".join(table), (md_path, json_path)
