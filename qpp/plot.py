"""QPP plots (matplotlib, Agg): predicted vs true scatter for the best model, and a per model × feature set bar chart
of group Kendall tau and the tau-inspired distance against their chance levels."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def plot_results(out: Path, rows, y_true, y_pred, best_name: str, target: str) -> list[str]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from utils.io import atomic_path

    paths = []
    fig, ax = plt.subplots(figsize=(5.5, 5))
    rng = np.random.default_rng(0)
    jitter = rng.uniform(-0.05, 0.05, size=len(y_true)) if len(np.unique(y_true)) < 50 else 0.0
    ax.scatter(y_pred, np.asarray(y_true) + jitter, s=4, alpha=0.35, lw=0)
    ax.set_xlabel(f"predicted {target} (badness: lower = better query)")
    ax.set_ylabel(f"true {target} (badness)")
    with np.errstate(all="ignore"):
        r = np.corrcoef(y_pred, y_true)[0, 1]
    ax.set_title(f"{best_name}\nPearson " + (f"{r:.3f}" if np.isfinite(r) else "n/a (constant values)"), fontsize=10)
    fig.tight_layout()
    paths.append(_save(fig, out / "scatter_best.png", atomic_path))
    plt.close(fig)

    labels = [f"{m}\n[{f}]" for f, m, _ in rows]
    gt = np.array([100 * res["kendall_tau_group_mean"] for _, _, res in rows], dtype=float)  # NaN: undefined
    ti = [res["tau_inspired_x100"] for _, _, res in rows]
    ti_chance = rows[0][2]["chance"]["tau_inspired_x100"]
    fig, axes = plt.subplots(2, 1, figsize=(max(7, 0.55 * len(rows) + 2), 7), sharex=True)
    x = np.arange(len(rows))
    feats = [f for f, _, _ in rows]
    uniq = list(dict.fromkeys(feats))
    colors = plt.cm.tab10(np.array([uniq.index(f) for f in feats]) % 10)
    axes[0].bar(x, np.nan_to_num(gt), color=colors)
    for i in np.flatnonzero(~np.isfinite(gt)):  # an undefined tau-b is not a tau of 0: no bar, "n/a"
        axes[0].text(x[i], 0, "n/a", ha="center", va="bottom", fontsize=7)
    axes[0].axhline(0, color="k", ls="--", lw=1, label="chance (0)")
    axes[0].set_ylabel("group Kendall tau-b ×100\n(higher = better)")
    axes[0].legend(loc="upper right", fontsize=8)
    axes[1].bar(x, ti, color=colors)
    axes[1].axhline(ti_chance, color="k", ls="--", lw=1, label=f"chance ({ti_chance:.2f})")
    axes[1].set_ylabel("tau-inspired distance ×100\n(lower = better)")
    axes[1].set_ylim(0, max(max(ti), ti_chance) * 1.15)
    axes[1].legend(loc="upper right", fontsize=8)
    axes[1].set_xticks(x)
    axes[1].set_xticklabels(labels, rotation=60, ha="right", fontsize=7)
    fig.suptitle("QPP per model x feature set (test)")
    fig.tight_layout()
    paths.append(_save(fig, out / "models_vs_chance.png", atomic_path))
    plt.close(fig)
    return paths


def _save(fig, path: Path, atomic_path) -> str:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    return str(path)
