"""Training curves of a run: ``curves.png`` (and TensorBoard event files when ``trainer.tensorboard`` is true).

Both are drawn from the per-epoch history the trainer records (``metrics.json["history"]``: ``train_loss``, the
max-margin ``val_loss`` on the val caption-0 matrix of the validation pass, val t2a R@1/5/10 and their geometric
mean, ``lr``), at the end of training, so a resumed run gets its whole history once. For a finished run:

    python -m trainer.curves data/saved/<experiment>/<run-id> [...]      # (re)writes <run>/curves.png
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Sequence

from trainer.run_log import MONITOR
from utils.cli import ArgumentParser
from utils.errors import UserError, run_cli
from utils.io import atomic_path, read_json

CURVES_NAME = "curves.png"
TENSORBOARD_DIR = "tensorboard"
_RECALLS = (("R1", "R@1"), ("R5", "R@5"), ("R10", "R@10"), (MONITOR, "geometric mean R@1/5/10"))


def _series(history: Sequence[dict], key: str) -> tuple[list[int], list[float]]:
    points = [(h["epoch"], h[key]) for h in history if h.get(key) is not None]
    return [e for e, _ in points], [float(v) for _, v in points]


def plot_curves(path: str | os.PathLike, history: Sequence[dict], best_epoch: int | None = None,
                title: str = "") -> Path:
    """Two panels: train / val loss, and val R@1/5/10 + geometric mean per epoch; the selected epoch marked."""
    if not history:
        raise UserError(f"{path}: no per-epoch history to plot")
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_val) = plt.subplots(1, 2, figsize=(11, 4.2), layout="constrained")
    for key, label, style in (("train_loss", "train loss (mean over batches)", "-"),
                              ("val_loss", "val loss (caption 0 x val clips)", "--")):
        epochs, values = _series(history, key)
        if values:
            ax_loss.plot(epochs, values, style, marker="o", markersize=3, label=label)
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("max-margin ranking loss")
    ax_loss.grid(alpha=0.3)
    ax_loss.legend(fontsize=8)
    epochs = [h["epoch"] for h in history]
    for i, (key, label) in enumerate(_RECALLS):
        values = [float(h["val"][key]) for h in history]
        ax_val.plot(epochs, values, marker="o", markersize=3, color=f"C{i}", label=label,
                    linewidth=2.2 if key == MONITOR else 1.2)
    ax_val.set_xlabel("epoch")
    ax_val.set_ylabel("val text-to-audio (%)")
    ax_val.grid(alpha=0.3)
    if best_epoch is not None:
        best = next((h for h in history if h["epoch"] == best_epoch), None)
        for ax in (ax_loss, ax_val):
            ax.axvline(best_epoch, color="grey", linestyle=":", linewidth=1.2,
                       label="selected epoch" if ax is ax_val else None)
        if best is not None:
            y = best["val"][MONITOR]
            ax_val.plot([best_epoch], [y], marker="*", markersize=13, color="C3", zorder=5)
            late = best_epoch > (epochs[0] + epochs[-1]) / 2
            ax_val.annotate(f"selected: epoch {best_epoch}\ngeom {y:.2f}", (best_epoch, y), textcoords="offset points",
                            xytext=(-12, -26) if late else (8, -26), ha="right" if late else "left", fontsize=8)
    from matplotlib.ticker import MaxNLocator
    for ax in (ax_loss, ax_val):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax_val.legend(fontsize=8, loc="best")
    fig.suptitle(title or "training curves", fontsize=10)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return Path(path)


def write_tensorboard(log_dir: str | os.PathLike, history: Sequence[dict], best_epoch: int | None = None) -> Path:
    """Event files under ``log_dir`` (scalars per epoch: loss/train, loss/val, val/R1 ..., lr, best_epoch)."""
    from torch.utils.tensorboard import SummaryWriter  # needs the tensorboard package (requirements.txt)

    log_dir = Path(log_dir)
    writer = SummaryWriter(log_dir=str(log_dir))
    try:
        for h in history:
            step = int(h["epoch"])
            for key, tag in (("train_loss", "loss/train"), ("val_loss", "loss/val"), ("lr", "lr")):
                if h.get(key) is not None:
                    writer.add_scalar(tag, float(h[key]), step)
            for key, _ in _RECALLS:
                writer.add_scalar(f"val_t2a/{key}", float(h["val"][key]), step)
        if best_epoch is not None:
            writer.add_scalar("selected_epoch", float(best_epoch), int(history[-1]["epoch"]))
    finally:
        writer.close()
    return log_dir


def write_run_curves(run_dir: str | os.PathLike, history: Sequence[dict], best_epoch: int | None,
                     tensorboard: bool = False) -> Path:
    """The trainer's end-of-training hook: ``<run>/curves.png`` (+ ``<run>/tensorboard/`` when asked)."""
    run_dir = Path(run_dir)
    path = plot_curves(run_dir / CURVES_NAME, history, best_epoch, title=f"{run_dir.parent.name} / {run_dir.name}")
    if tensorboard:
        try:
            write_tensorboard(run_dir / TENSORBOARD_DIR, history, best_epoch)
        except ImportError as err:  # never lose a finished training to a missing optional viewer
            print(f"warning: trainer.tensorboard is true but TensorBoard is unavailable ({err}); "
                  "pip install tensorboard, then: python -m trainer.curves --tensorboard " + str(run_dir),
                  file=sys.stderr)
    return path


def main(argv: Sequence[str] | None = None) -> None:
    p = ArgumentParser(prog="python -m trainer.curves", description=(
        "(Re)write curves.png of finished runs from the per-epoch history in their metrics.json."))
    p.add_argument("runs", nargs="+", help="run folders data/saved/<experiment>/<run-id>")
    p.add_argument("--tensorboard", action="store_true", help="also write <run>/tensorboard/ event files")
    args = p.parse_args(argv)
    for run in args.runs:
        run_dir = Path(run)
        metrics = read_json(run_dir / "metrics.json")
        history = metrics.get("history") if isinstance(metrics, dict) else None
        if not history:
            raise UserError(f"{run_dir / 'metrics.json'}: no per-epoch 'history' (not a finished training run?)")
        path = write_run_curves(run_dir, history, metrics.get("best_epoch"), args.tensorboard)
        print(f"wrote {path}")


if __name__ == "__main__":
    sys.exit(run_cli(main))
