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
    """Create ``<save_dir>/<experiment>/<timestamp>_seed-<seed>`` atomically (``mkdir`` without ``exist_ok``):
    two processes starting in the same second get ``<timestamp>-01_seed-<seed>``, ``-02``, ... and never the same
    folder."""
    root = Path(save_dir) / experiment
    root.mkdir(parents=True, exist_ok=True)
    stamp = _dt.datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    for suffix in range(1000):
        run = root / (f"{stamp}_seed-{seed}" if suffix == 0 else f"{stamp}-{suffix:02d}_seed-{seed}")
        try:
            run.mkdir()
            return run
        except FileExistsError:
            continue
    raise UserError(f"{root}: could not create a unique run folder for {stamp}")


def complete_runs(save_dir: str | os.PathLike, experiment: str) -> list[Path]:
    """Complete run folders of ``experiment``, in order of completion (``metrics.json`` written last; ties by name)."""
    root = Path(save_dir) / experiment
    if not root.is_dir():
        return []
    runs = []
    for p in root.iterdir():
        try:
            runs.append(((p / COMPLETE_MARKER).stat().st_mtime_ns, p.name, p))
        except (FileNotFoundError, NotADirectoryError):
            continue
    return [p for _, _, p in sorted(runs)]


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
    save_dir, experiment = config["trainer"]["save_dir"], experiment_name(config_path)
    newest = newest_complete_run(save_dir, experiment)  # refuses an experiment without a complete run
    mine = str(Path(config_path).resolve())
    for run in reversed(complete_runs(save_dir, experiment)):
        if _trained_from(run) in (None, mine):  # None: a run made before run.json named its config file
            return run
    raise UserError(f"{Path(save_dir) / experiment}: no complete run of {config_path}: the newest, {newest.name}, was "
                    f"trained from {_trained_from(newest)} (another config file with the same folder and file name "
                    "shares this experiment folder); name the run with --run")


def _trained_from(run: Path) -> str | None:
    import json

    try:
        value = json.loads((run / "run.json").read_text(encoding="utf-8")).get("config_file")
    except (OSError, ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None
