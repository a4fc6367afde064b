"""Human-readable views of fusion/results.json: a fixed-width table (stdout) and results.md."""
from __future__ import annotations

import os

from utils.io import write_text

_COLUMNS = ("R1", "R5", "R10", "MedR", "mAP10")
_BASELINES = (("baseline_per_caption", "per caption (all K*N queries)"),
              ("baseline_caption0", "caption 0 only (val protocol)"),
              ("oracle_best_caption", "oracle: best caption per clip"))


def _rows(results: dict) -> list[tuple[str, int, dict, str, str]]:
    n, k = results["queries"], results["captions_per_clip"]
    sig = results.get("significance", {})
    rows = [(label, n * k if key == "baseline_per_caption" else n, results[key], "", "")
            for key, label in _BASELINES]
    for name, m in results["methods"].items():
        p_sum = sig.get("vs_combsum", {}).get(name)
        p_base = sig.get("vs_baseline_per_clip", {}).get(name)
        rows.append((name, n, m, "-" if p_sum is None else f"{p_sum:.4f}", "-" if p_base is None else f"{p_base:.4f}"))
    return rows


def format_table(results: dict) -> str:
    """Fixed-width t2a table: baselines, then every method with its p-values."""
    head = f"{'system':<32} {'queries':>7} " + " ".join(f"{c:>6}" for c in _COLUMNS) + f" {'p(sum)':>7} {'p(base)':>7}"
    lines = [head, "-" * len(head)]
    for label, q, m, p_sum, p_base in _rows(results):
        lines.append(f"{label:<32} {q:>7} " + " ".join(f"{m[c]:>6.2f}" for c in _COLUMNS) + f" {p_sum:>7} {p_base:>7}")
    lines.append("p(sum): vs combsum; p(base): vs the per-clip mean RR of the unfused captions "
                 "(paired randomisation test on reciprocal ranks).")
    return "\n".join(lines)


def to_markdown(results: dict) -> str:
    out = ["# Fusion of the caption queries", "",
           f"{results['queries']} clips, K = {results['captions_per_clip']} captions each; text-to-audio; "
           "R@k and mAP@10 in percent, MedR 1-based, ties averaged.", "",
           "| system | queries | " + " | ".join(_COLUMNS) + " | p vs combsum | p vs per-clip baseline |",
           "|---|---:|" + "---:|" * (len(_COLUMNS) + 2)]
    for label, q, m, p_sum, p_base in _rows(results):
        out.append(f"| {label} | {q} | " + " | ".join(f"{m[c]:.2f}" for c in _COLUMNS) + f" | {p_sum} | {p_base} |")
    sig = results.get("significance", {})
    out += ["", f"Significance: {sig.get('test', '')}.", "", f"**Protocol caveat.** {results.get('protocol', '')}", "",
            f"Parameters: {results.get('params', {})}."]
    return "\n".join(out) + "\n"


def write_markdown(path: str | os.PathLike, results: dict) -> None:
    write_text(path, to_markdown(results))
