"""Human-readable views of fusion/results.json: a fixed-width table (stdout) and results.md.

Metric cells carry their 95% bootstrap interval over queries (``results["ci"]``); p-values are the paired
randomisation test and the paired t-test, raw and Holm-adjusted within each family (``significance.detail``).
"""
from __future__ import annotations

import os

from fusion.stats import fmt_ci, fmt_p
from utils.io import write_text

_COLUMNS = ("R1", "R5", "R10", "MedR", "mAP10")
_BASELINES = (("baseline_per_caption", "per caption (all K*N queries)"),
              ("baseline_caption0", "caption 0 only (val protocol)"),
              ("oracle_best_caption", "oracle: best caption per clip"))


def _p_cells(detail: dict | None) -> tuple[str, str]:
    """``rand / t`` raw and Holm-adjusted, or ``-``."""
    if not detail:
        return "-", "-"
    return (f"{fmt_p(detail['p_randomisation'])} / {fmt_p(detail['p_t'])}",
            f"{fmt_p(detail['p_randomisation_holm'])} / {fmt_p(detail['p_t_holm'])}")


def _rows(results: dict) -> list[tuple[str, int, dict, dict, tuple, tuple]]:
    n, k = results["queries"], results["captions_per_clip"]
    detail = results.get("significance", {}).get("detail", {})
    cis = results.get("ci", {})
    rows = [(label, n * k if key == "baseline_per_caption" else n, results[key], cis.get(key, {}), ("", ""), ("", ""))
            for key, label in _BASELINES]
    for name, m in results["methods"].items():
        rows.append((name, n, m, cis.get(name, {}), _p_cells(detail.get("vs_combsum", {}).get(name)),
                     _p_cells(detail.get("vs_baseline_per_clip", {}).get(name))))
    return rows


def _cell(m: dict, ci: dict, c: str) -> str:
    return fmt_ci(m[c], ci.get(c)) if c != "MedR" else f"{m[c]:g}"


def format_table(results: dict) -> str:
    """Fixed-width t2a table: baselines, then every method with its CIs and p-values."""
    widths = {c: (6 if c == "MedR" else 23) for c in _COLUMNS}
    head = (f"{'system':<30} {'queries':>7} " + " ".join(f"{c:>{widths[c]}}" for c in _COLUMNS)
            + f"  {'p vs combsum':>17}  {'p vs unfused':>17}")
    lines = [head, "-" * len(head)]
    for label, q, m, ci, p_sum, p_base in _rows(results):
        lines.append(f"{label:<30} {q:>7} " + " ".join(f"{_cell(m, ci, c):>{widths[c]}}" for c in _COLUMNS)
                     + f"  {p_sum[0]:>17}  {p_base[0]:>17}")
    lines.append("[low, high]: 95% bootstrap CI over queries. p: paired randomisation / paired t-test on per-clip "
                 "reciprocal ranks (raw; Holm-adjusted in results.md); p vs unfused: vs the per-clip mean RR of the "
                 "unfused captions.")
    return "\n".join(lines)


def to_markdown(results: dict) -> str:
    out = ["# Fusion of the caption queries", "",
           f"{results['queries']} clips, K = {results['captions_per_clip']} captions each; text-to-audio; "
           "R@k and mAP@10 in percent with 95% bootstrap CIs over queries, MedR 1-based, ties averaged.", "",
           "| system | queries | " + " | ".join(_COLUMNS) + " | p vs combsum (rand / t) | Holm | "
           "p vs per-clip baseline (rand / t) | Holm |",
           "|---|---:|" + "---:|" * (len(_COLUMNS) + 4)]
    for label, q, m, ci, p_sum, p_base in _rows(results):
        out.append(f"| {label} | {q} | " + " | ".join(_cell(m, ci, c) for c in _COLUMNS)
                   + f" | {p_sum[0]} | {p_sum[1]} | {p_base[0]} | {p_base[1]} |")
    sig = results.get("significance", {})
    out += ["", f"Significance: {sig.get('test', '')}.", "", f"**Protocol caveat.** {results.get('protocol', '')}", "",
            f"Parameters: {results.get('params', {})}."]
    from fusion.qrels_eval import to_markdown as multi_relevance_markdown
    return "\n".join(out) + "\n" + multi_relevance_markdown(results)


def write_markdown(path: str | os.PathLike, results: dict) -> None:
    write_text(path, to_markdown(results))
