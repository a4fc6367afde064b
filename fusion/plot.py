"""fusion/methods.png: R@1 / R@5 / R@10 of every system with 95% bootstrap confidence intervals over queries."""
from __future__ import annotations

import os

import numpy as np

from utils.io import atomic_path

_KS = (1, 5, 10)
_LABELS = {"baseline_per_caption": "per caption\n(K·N queries)", "baseline_caption0": "caption 0",
           "oracle_best_caption": "oracle\nbest caption"}


def bootstrap_recall_ci(ranks: np.ndarray, k: int, resamples: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """R@k (percent) of 0-based ranks and its 95% percentile bootstrap interval over queries."""
    hits = (np.asarray(ranks) < k).astype(np.float64) if k > 1 else (np.asarray(ranks) == 0).astype(np.float64)
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    block = max(1, 2**22 // max(1, hits.size))
    for start in range(0, resamples, block):  # bounded memory for large query sets
        n = min(block, resamples - start)
        means[start:start + n] = hits[rng.integers(0, hits.size, size=(n, hits.size))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return 100 * hits.mean(), 100 * low, 100 * high


def plot_methods(path: str | os.PathLike, systems: dict[str, np.ndarray], resamples: int = 2000) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(systems)
    stats = np.array([[bootstrap_recall_ci(systems[s], k, resamples) for k in _KS] for s in names])  # (S, 3, 3)
    x = np.arange(len(names))
    width = 0.27
    fig, ax = plt.subplots(figsize=(max(8, 1.05 * len(names) + 2), 4.8), layout="constrained")
    for i, k in enumerate(_KS):
        value, low, high = stats[:, i, 0], stats[:, i, 1], stats[:, i, 2]
        ax.bar(x + (i - 1) * width, value, width, label=f"R@{k}", color=f"C{i}",
               yerr=np.vstack([value - low, high - value]), capsize=2, error_kw={"linewidth": 0.8})
    n_base = sum(name in _LABELS for name in names)
    if 0 < n_base < len(names):
        ax.axvline(n_base - 0.5, color="grey", linestyle=":", linewidth=1)
    ax.set_xticks(x, [_LABELS.get(n, n) for n in names], rotation=30, ha="right", fontsize=9)
    ax.set_ylabel("recall (%)")
    ax.set_title("Text-to-audio retrieval: unfused baselines (left) vs fused caption queries (right), 95% bootstrap CI")
    ax.title.set_fontsize(10)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=9)
    ax.set_ylim(0, min(105, float(stats[:, :, 2].max()) * 1.1 + 1))
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)


def plot_risk_reward(path: str | os.PathLike, parts: dict[str, dict[str, dict]], baseline: str) -> None:
    """Risk-reward view (as in Benham & Culpepper's fusion studies): for every system vs ``baseline``, the queries
    it makes worse (left, red) and better (right, green), stacked by the size of the change in RR (darker =
    larger); one panel per part. ``parts``: ``{part: {system: fusion.stats.risk_reward(...)}}``."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n_rows = max(len(p) for p in parts.values())
    fig, axes = plt.subplots(1, len(parts), figsize=(7.2 * len(parts), 1.2 + 0.42 * n_rows), layout="constrained",
                             squeeze=False)
    for ax, (part, systems) in zip(axes[0], parts.items()):
        names = list(systems)[::-1]  # first system on top
        y = np.arange(len(names))
        edges = np.asarray(next(iter(systems.values()))["delta_edges"])
        half = len(edges) // 2  # bins [0, half) are losses (most negative first), [half, ...) wins
        reds, greens = plt.get_cmap("Reds"), plt.get_cmap("Greens")
        for side, order, cmap in (("loss", range(half - 1, -1, -1), reds), ("win", range(half, len(edges) - 1), greens)):
            start = np.zeros(len(names))
            for step, b in enumerate(order):
                counts = np.array([systems[nm]["delta_histogram"][b] for nm in names], dtype=float)
                sign = -1.0 if side == "loss" else 1.0
                label = f"{edges[b]:+g}..{edges[b + 1]:+g}"
                ax.barh(y, sign * counts, left=sign * start, color=cmap(0.3 + 0.7 * step / max(half - 1, 1)),
                        label=label, height=0.7)
                start += counts
        for i, nm in enumerate(names):
            rr = systems[nm]
            trisk = "n/a" if rr["trisk"] is None or not np.isfinite(rr["trisk"]) else f"{rr['trisk']:+.1f}"
            ax.text(1.0, i, f" {rr['wins']}/{rr['losses']}/{rr['ties']}  TRisk {trisk}", va="center",
                    fontsize=7, transform=ax.get_yaxis_transform())
        ax.axvline(0, color="black", linewidth=0.8)
        ax.set_yticks(y, names, fontsize=8)
        ax.set_xlabel(f"queries worse (left) / better (right) than {baseline}", fontsize=9)
        ax.set_title(f"{part.replace('_', ' ')}: wins/losses/ties, TRisk (α = 1)", fontsize=9)
        ax.grid(axis="x", alpha=0.3)
    handles, labels = axes[0][-1].get_legend_handles_labels()
    fig.legend(handles, labels, title="ΔRR", fontsize=7, title_fontsize=8, loc="outside right center")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
