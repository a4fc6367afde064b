"""The command line of the fusion of systems: ``fusion.py --runs RUN1 RUN2 ...`` (pipeline: fusion/systems.py)."""
from __future__ import annotations

import argparse
import shlex
from pathlib import Path
from typing import Sequence

from fusion.methods import FusionOverflow, largest_abs
from fusion.registry import FUSERS, get_fuser, get_normalizer
from fusion.system_inputs import System, load_systems
from fusion.systems import GRID_LIMIT, LEARNED, run_system_fusion
from utils.cli import float_in
from utils.errors import UserError
from utils.io import write_json
from utils.outputs import check_target, output_set

WRITER = "fusion.py --runs"  # recorded in complete.json: --out may replace only a set of this writer
OPTIMIZE_METRICS = ("mAP10", "R1", "R5", "R10", "geometric_mean_R1-R5-R10")  # higher is better
_STEP_RANGE = float_in(0.01, 0.5)  # at least 2 steps; at most 100 (the grid grows as steps^(systems-1))


def weights_step(text: str) -> float:
    """``--weights-step``: a step in [0.01, 0.5] that divides 1 into whole steps, so the grid reaches 0 and 1."""
    value = _STEP_RANGE(text)
    if abs(round(1 / value) * value - 1) > 1e-9:
        raise argparse.ArgumentTypeError(f"{text}: must divide 1 into whole steps (e.g. 0.1, 0.05, 0.25)")
    return value


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("fusion of systems (instead of --config/--run/--sims)")
    g.add_argument("--runs", nargs="+", metavar="RUN", help="two or more systems of the same split: run folders "
                   "(sims/<split>.npy; weights learned on sims/val.npy), .npy matrices with manifests, or TREC run "
                   "files (with --qrels). Rows are fused per query, then the caption queries of each clip")
    g.add_argument("--names", help="comma-separated system names (default: experiment names / file stems)")
    g.add_argument("--val-runs", dest="val_runs", nargs="+", metavar="RUN",
                   help="the systems' val runs (one per --runs entry, same order) for the weights, when --runs are "
                   "files; run folders bring their own sims/val.npy")
    g.add_argument("--qrels", help="TREC qrels of the --runs' split (needed when every system is a TREC run), or "
                   "of a --sims TREC run")
    g.add_argument("--val-qrels", dest="val_qrels", help="TREC qrels of the --val-runs")
    g.add_argument("--systems-methods", dest="systems_methods", default="all",
                   help=f"comma-separated methods that fuse the systems, or 'all' (default): {', '.join(FUSERS)}; "
                   f"{LEARNED} uses the weights learned on val")
    g.add_argument("--systems-norm", dest="systems_norm", default="min-max",
                   help="per-row normalisation of each system before the score-based methods (default min-max)")
    g.add_argument("--captions-method", dest="captions_method", default="combsum",
                   help="caption fusion on top of every system row (default combsum; 'none' to skip; --norm, "
                   "--depth, --rrf_k apply)")
    g.add_argument("--weights-search", dest="weights_search", default="auto", choices=("auto", "grid", "coordinate"),
                   help="grid: every weight vector on the simplex with step --weights-step; coordinate: coordinate "
                   f"ascent over 0..1; auto (default): grid up to {GRID_LIMIT} points")
    g.add_argument("--weights-step", dest="weights_step", type=weights_step, default=0.1,
                   help="weight grid step, dividing 1 into 2 to 100 steps (default 0.1)")
    g.add_argument("--optimize-metric", dest="optimize_metric", default="mAP10", choices=OPTIMIZE_METRICS,
                   help="val metric (caption queries) the weights and the best single system are chosen by (mAP10)")


SYSTEMS_ONLY = ("names", "val_runs", "qrels", "val_qrels")


def check_no_systems_flags(args: argparse.Namespace) -> None:
    """The --runs options mean nothing to caption fusion of one run: refuse them rather than ignore them."""
    given = [f"--{k.replace('_', '-')}" for k in SYSTEMS_ONLY if getattr(args, k) and not (k == "qrels" and args.sims)]
    given += [f"--{k.replace('_', '-')}" for k, default in (("systems_methods", "all"), ("systems_norm", "min-max"),
              ("captions_method", "combsum"), ("weights_search", "auto"), ("weights_step", 0.1),
              ("optimize_metric", "mAP10")) if getattr(args, k) != default]
    if given:
        raise UserError(f"{', '.join(given)} appl{'ies' if len(given) == 1 else 'y'} to --runs (fusion of systems) only")


def main_from_args(args: argparse.Namespace) -> dict:
    given = [f for f, v in (("--config", args.config), ("--run", args.run), ("--sims", args.sims),
                            ("--weights", args.weights != "auto"), ("--legacy-weights", args.legacy_weights),
                            ("--captions_per_clip", args.captions_per_clip is not None),
                            ("--methods", args.methods != "all")) if v]
    if given:
        raise UserError(f"--runs fuses systems; it does not combine with {', '.join(given)} "
                        "(use --systems-methods / --captions-method)")
    if args.val_qrels and not args.val_runs:
        raise UserError("--val-qrels needs --val-runs")
    for flag, value, low in (("--depth", args.depth, 1), ("--rrf_k", args.rrf_k, 0), ("--resamples", args.resamples, 1)):
        if value < low:
            raise UserError(f"{flag} must be >= {low}, got {value}")
    methods = list(FUSERS) if args.systems_methods == "all" else \
        list(dict.fromkeys(m.strip() for m in args.systems_methods.split(",") if m.strip()))
    if not methods:
        raise UserError("--systems-methods is empty")
    for m in methods:
        get_fuser(m)
    get_normalizer(args.systems_norm)
    get_normalizer(args.norm)
    if args.captions_method != "none":
        get_fuser(args.captions_method)
        if args.captions_method == LEARNED:
            raise UserError(f"--captions-method {LEARNED} needs per-caption weights; use qpp.py for those")
    from fusion.normalize import get_ops
    get_ops(args.device)
    names = [n.strip() for n in args.names.split(",")] if args.names else None
    systems = load_systems(args.runs, args.split, val_runs=args.val_runs, qrels=args.qrels, val_qrels=args.val_qrels,
                           names=names)
    from fusion.qrels_eval import load_eval_qrels
    eval_qrels = load_eval_qrels(args.eval_qrels, systems[0].test.manifest)  # validated before anything is written
    if systems[0].val is None and LEARNED in methods:
        if args.systems_methods != "all":
            raise UserError(f"--systems-methods {LEARNED} learns weights on val: the systems have no val run "
                            "(run folders with sims/val.npy, or --val-runs)")
        methods.remove(LEARNED)
    out = Path(args.out) if args.out else _default_out(systems)
    check_target(out, writer=WRITER)  # absent or a previous output set of this command (never a foreign folder)
    from fusion.system_report import format_table
    try:
        with output_set(out, writer=WRITER) as tmp:  # built aside, recorded, swapped in (utils/outputs)
            results = _fuse(systems, tmp, methods, eval_qrels, args)
    except FusionOverflow as err:  # the output set was discarded; name the matrix with the largest |score|
        data = [d for s in systems for d in (s.test, s.val) if d is not None]
        raise UserError(err.describe(max(data, key=lambda d: largest_abs(d.sims)).where)) from None
    if not args.quiet:
        print(format_table(results))
        print(f"wrote {out}/results.json, results.md, weights.json" + (", risk-reward.png" if args.plot else ""))
    return results


def _fuse(systems: Sequence[System], tmp: Path, methods: list[str], eval_qrels, args: argparse.Namespace) -> dict:
    """Every file of the output set, written into the temporary folder ``tmp``; results.json last."""
    from fusion.system_report import write_markdown
    results = run_system_fusion(
        systems, tmp, methods, systems_norm=args.systems_norm, captions_method=args.captions_method,
        params={"norm": args.norm, "depth": args.depth, "k": args.rrf_k}, search=args.weights_search,
        step=args.weights_step, metric=args.optimize_metric, device=args.device, resamples=args.resamples,
        plot=args.plot, progress=not args.quiet, eval_qrels=eval_qrels and (args.eval_qrels, eval_qrels),
        command=" ".join(["python fusion.py"] + [shlex.quote(a) for a in getattr(args, "argv", None) or ["--runs", *args.runs]]))
    write_markdown(tmp / "results.md", results)
    write_json(tmp / "results.json", results)
    return results


def _default_out(systems: Sequence[System]) -> Path:
    """``<save_dir>/system-fusion/<names joined by +>/`` for run folders, else ``<first file stem>-system-fusion/``."""
    first = Path(systems[0].source)
    tag = "+".join(s.name.replace("/", "_") for s in systems)
    if first.is_dir():
        return first.parent.parent / "system-fusion" / (tag if len(tag) <= 120 else f"{len(systems)}-systems")
    return first.parent / f"{first.stem}-system-fusion"


