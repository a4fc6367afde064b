"""Human-readable views of a fusion of systems (``fusion.py --runs``): stdout table and results.md."""
from __future__ import annotations

import os

from fusion.stats import fmt_ci, fmt_p
from utils.io import write_text

_COLUMNS = ("R1", "R5", "R10", "MedR", "mAP10")
_TITLES = {"caption_queries": "Caption queries (systems fused per caption row)",
           "clip_queries": "Clip queries (systems fused, then the captions of each clip)"}


def _cells(results: dict, part: str):
    p = results[part]
    for name, row in p["rows"].items():
        m, ci = row["metrics"], row["ci"]
        sig = p["significance"].get(name)
        rr = p["risk_reward"].get(name)
        yield (name, row["kind"], row["queries"],
               [f"{m[c]:g}" if c == "MedR" else fmt_ci(m[c], ci.get(c)) for c in _COLUMNS],
               ("baseline", "", "", "") if sig is None else
               (fmt_p(sig["p_randomisation"]), fmt_p(sig["p_t"]), fmt_p(sig["p_randomisation_holm"]),
                fmt_p(sig["p_t_holm"])),
               "" if rr is None else f"{rr['wins']}/{rr['losses']}/{rr['ties']}")


def _header(results: dict) -> list[str]:
    w = results.get("weights")
    best = results["best_single"]
    lines = [f"split {results['split']}: {results['queries']} caption queries, {results['clips']} clips, "
             f"K = {results['captions_per_clip']}; systems normalised with {results['systems_norm']}; caption "
             f"fusion {results['captions_method']}",
             f"best single system: {best['name']} (chosen on {best['selected_on']})"]
    if w:
        lines.append("weights learned on val (" + f"{w['search']}, step {w['step']}, {w['metric']}): "
                     + ", ".join(f"{k} {v:.2f}" for k, v in w["weights"].items())
                     + f"; val {w['metric']} {w['val_' + w['metric']]:.2f} (equal weights "
                       f"{w['val_' + w['metric'] + '_equal_weights']:.2f})")
    return lines


def _trisk(rr: dict) -> str:
    t = rr.get("trisk")
    return "n/a" if t is None or t != t or t in (float("inf"), float("-inf")) else f"{t:+.2f}"


def format_table(results: dict) -> str:
    out = _header(results)
    for part in ("caption_queries", "clip_queries"):
        if part not in results:
            continue
        head = (f"{'system':<30} {'queries':>7} " + " ".join(f"{c:>23}" if c != "MedR" else f"{c:>6}" for c in _COLUMNS)
                + f" {'p rand':>8} {'p t':>8} {'Holm r':>8} {'Holm t':>8} {'win/loss/tie':>13}")
        out += ["", _TITLES[part], head, "-" * len(head)]
        for name, _, q, cells, p, wl in _cells(results, part):
            out.append(f"{name:<30} {q:>7} " + " ".join(f"{c:>23}" if col != "MedR" else f"{c:>6}"
                                                         for c, col in zip(cells, _COLUMNS))
                       + "".join(f" {x:>8}" for x in p) + f" {wl:>13}")
    out.append("[low, high]: 95% bootstrap CI; p vs the best single system (paired randomisation / paired t on "
               "per-clip RR; Holm over the rows); win/loss/tie: clips better / worse / equal in RR.")
    return "\n".join(out)


def to_markdown(results: dict) -> str:
    out = ["# Fusion of systems", ""] + [f"- {line}" for line in _header(results)] + [""]
    for part in ("caption_queries", "clip_queries"):
        if part not in results:
            continue
        out += [f"## {_TITLES[part]}", "",
                "| system | kind | queries | " + " | ".join(_COLUMNS)
                + " | p rand | p t | Holm rand | Holm t | clips better / worse / equal |",
                "|---|---|---:|" + "---:|" * (len(_COLUMNS) + 5)]
        for name, kind, q, cells, p, wl in _cells(results, part):
            out.append(f"| {name} | {kind} | {q} | " + " | ".join(cells) + " | " + " | ".join(p) + f" | {wl} |")
        out += ["", "| vs best single | better | worse | equal | mean gain (wins) | mean loss (losses) | URisk | TRisk |",
                "|---|---:|---:|---:|---:|---:|---:|---:|"]
        for name, rr in results[part]["risk_reward"].items():
            out.append(f"| {name} | {rr['wins']} | {rr['losses']} | {rr['ties']} | {rr['mean_gain_on_wins']:+.4f} | "
                       f"{rr['mean_loss_on_losses']:+.4f} | {rr['urisk']:+.4f} | {_trisk(rr)} |")
        out.append("")
    out += [results["notes"], "", f"Command: `{results['command']}`"]
    from fusion.qrels_eval import to_markdown as multi_relevance_markdown
    return "\n".join(out) + "\n" + multi_relevance_markdown(results)


def write_markdown(path: str | os.PathLike, results: dict) -> None:
    write_text(path, to_markdown(results))
