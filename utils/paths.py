"""Experiment names and run folders (``data/saved/<experiment>/<run-id>/``, see docs/FORMATS.md)."""
from __future__ import annotations

import datetime as _dt
import os
from pathlib import Path

from utils.errors import UserError

COMPLETE_MARKER = "metrics.json"  # written last: a run folder is complete once it exists


def experiment_name(config_path: str | os.PathLike) -> str:
    """``configs/clotho/train-vggish-vggsound.json`` -> ``clotho-train-vggish-vggsound``."""
    path = Path(config_path)
    return f"{path.parent.name}-{path.stem}"


def make_run_dir(save_dir: str | os.PathLike, experiment: str, seed: int) -> Path:
    """Create ``<save_dir>/<experiment>/<timestamp>_seed-<seed>``; ids sort by creation time."""
    root = Path(save_dir) / experiment
    stamp = _dt.datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    run = root / f"{stamp}_seed-{seed}"
    suffix = 1
    while run.exists():  # two runs in the same second: keep both, keep the sort order
        run = root / f"{stamp}-{suffix:02d}_seed-{seed}"
        suffix += 1
    run.mkdir(parents=True)
    return run


def complete_runs(save_dir: str | os.PathLike, experiment: str) -> list[Path]:
    """Complete run folders of ``experiment``, oldest first."""
    root = Path(save_dir) / experiment
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if (p / COMPLETE_MARKER).is_file())


def newest_complete_run(save_dir: str | os.PathLike, experiment: str) -> Path:
    runs = complete_runs(save_dir, experiment)
    if not runs:
        raise UserError(
            f"{Path(save_dir) / experiment}: no complete run (a run is complete once {COMPLETE_MARKER} exists); "
            "train one first with train.py"
        )
    return runs[-1]


def newest_run_of_config(config_path: str | os.PathLike, custom_args: str | None = None) -> Path:
    """The newest complete run of a training config's experiment (``--eval_from_training_config``)."""
    from utils.config import load_config

    config = load_config(config_path, custom_args)
    return newest_complete_run(config["trainer"]["save_dir"], experiment_name(config_path))
