"""Training curves: a tiny training run writes curves.png (and TensorBoard events when asked); the CLI redraws."""
from __future__ import annotations

import json

import numpy as np
import pytest

from trainer.curves import main as curves_main
from trainer.curves import plot_curves
from trainer.trainer import fit, load_splits
from utils.errors import UserError, run_cli


@pytest.fixture(scope="module")
def tiny_splits(_tiny_config_resolved):
    return load_splits(_tiny_config_resolved, ["train", "val", "test"])


def _png_size(path):
    from PIL import Image
    with Image.open(path) as im:
        return im.size


def test_tiny_training_writes_curves_and_tensorboard(tiny_config, tiny_config_path, tmp_path, tiny_splits):
    cfg = tiny_config
    cfg["trainer"].update(save_dir=str(tmp_path), epochs=2, tensorboard=True)
    cfg["arch"]["args"]["use_ce"] = ""  # MoEE: the fast variant
    run = fit(cfg, tiny_config_path, "cpu", quiet=True, data=tiny_splits, threads=1)
    assert (run / "curves.png").is_file() and _png_size(run / "curves.png")[0] > 800
    history = json.loads((run / "metrics.json").read_text())["history"]
    assert [h["epoch"] for h in history] == [1, 2]
    assert all(np.isfinite(h["val_loss"]) and np.isfinite(h["train_loss"]) for h in history)

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    acc = EventAccumulator(str(run / "tensorboard"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"loss/train", "loss/val", "val_t2a/R1", "val_t2a/geometric_mean_R1-R5-R10"} <= tags
    val_loss = [e.value for e in acc.Scalars("loss/val")]
    assert [e.step for e in acc.Scalars("loss/val")] == [1, 2]
    assert np.allclose(val_loss, [h["val_loss"] for h in history], rtol=1e-6)


def test_cli_redraws_a_finished_run_and_tensorboard_is_opt_in(tmp_path):
    history = [{"epoch": 1, "train_loss": 0.5, "val_loss": 0.6, "lr": 0.01,
                "val": {"R1": 1.0, "R5": 5.0, "R10": 9.0, "geometric_mean_R1-R5-R10": 3.6}}]
    run = tmp_path / "exp" / "run"
    run.mkdir(parents=True)
    (run / "metrics.json").write_text(json.dumps({"history": history, "best_epoch": 1}))
    assert run_cli(curves_main, [str(run)]) == 0
    assert (run / "curves.png").is_file() and not (run / "tensorboard").exists()
    assert run_cli(curves_main, [str(tmp_path)]) == 2  # not a run folder: one line, exit 2


def test_plot_marks_the_selected_epoch_and_refuses_empty_history(tmp_path):
    history = [{"epoch": e, "train_loss": 1.0 / e, "val_loss": 1.2 / e,
                "val": {"R1": e, "R5": 2 * e, "R10": 3 * e, "geometric_mean_R1-R5-R10": 1.8 * e}} for e in (1, 2, 3)]
    plot_curves(tmp_path / "c.png", history, best_epoch=2)
    assert (tmp_path / "c.png").stat().st_size > 10_000
    with pytest.raises(UserError):
        plot_curves(tmp_path / "d.png", [], best_epoch=None)
    assert not (tmp_path / "d.png").exists()
