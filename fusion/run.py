"""The fusion stage: load a run's sims, fuse the caption queries of each clip, evaluate honestly, write artefacts.

``fusion.py`` (thin) calls :func:`main_from_args`. Library entry point: :func:`run_fusion`.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Sequence

import numpy as np
from tqdm import tqdm

from fusion import report
from fusion.methods import FusionOverflow, fork_rank_weights, group_rows
from fusion.registry import FUSERS, SCORE_BASED, fuse, get_fuser, get_normalizer
from fusion.stats import caption_fusion_significance, metric_cis
from retrieval.metrics import gt_ranks_a2t, gt_ranks_t2a, metrics_from_ranks, reciprocal_ranks
from retrieval.sims_io import SimsManifest, fused_manifest, load_sims, read_bare_sims, read_npy, save_sims
from retrieval.trec import write_trec_qrels, write_trec_run
from utils.cli import ArgumentParser, int_in, nonneg_int, positive_int
from utils.errors import UserError
from utils.io import read_json, write_json
from utils.outputs import RECORD, check_target, output_set, recover, require_complete, verify_recorded_file

WRITER = "fusion.py"  # recorded in complete.json: --out may replace only a set of this writer
PROTOCOL_NOTE = (
    "Fused queries use all K captions of the target clip, so the fused rows (N queries) are not comparable "
    "one-to-one with the single-caption baselines (K*N queries, or N with caption 0); oracle_best_caption "
    "(min rank over a clip's captions) is an upper bound for any caption selection."
)


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="fusion.py", description=(
        "Fuse the K caption queries of each clip of a (K*N, N) similarity matrix into one query per clip, with "
        "several fusion methods, and evaluate them on the same matrix next to the unfused baselines. Writes "
        "<out>/results.json, results.md, methods.png, <method>.npy/.json/.trec and qrels.trec. "
        "Exactly one input: --config (newest complete run), --run, or --sims; or --runs RUN1 RUN2 ... to fuse "
        "several systems of one split (weights learned on val), then their caption queries."))
    src = p.add_argument_group("input (exactly one)")
    src.add_argument("--config", help="training config; fuses the newest complete run of its experiment "
                     "(<trainer.save_dir>/<experiment>/<run-id>/)")
    src.add_argument("--eval_from_training_config", action="store_true",
                     help="read the run from --config (the fork's README command; implied by --config)")
    src.add_argument("--run", help="a run folder data/saved/<experiment>/<run-id>/; reads sims/<split>.npy")
    src.add_argument("--sims", help="a matrix file: .npy with a .json manifest beside it, a bare .npy, the "
                     "fork's CSV (header row of column indices, K*N rows x N columns, rows clip-major), or a TREC run "
                     "(.trec/.run/.txt/.tsv) of the caption queries with --qrels")
    src.add_argument("--captions_per_clip", type=positive_int, default=None,
                     help="K for a bare --sims matrix (default 5); must match the manifest if there is one")
    p.add_argument("--split", default="test", help="split of a run to fuse (default test)")
    p.add_argument("--out", help="output folder (default <run>/fusion for a run, <run>/fusion-<split> for "
                   "another split, <file stem>-fusion/ beside a --sims file)")
    p.add_argument("--methods", default="all",
                   help=f"comma-separated methods or 'all' (default); valid: {', '.join(FUSERS)}. With 'all', "
                   "weighted_combsum runs only when weights are available")
    p.add_argument("--norm", default="none", help="per-query score normalisation before the score-based methods "
                   f"({', '.join(SCORE_BASED)}): none (default, like the fork), min-max, z-score, rank")
    p.add_argument("--depth", type=positive_int, default=100,
                   help="CombMNZ: a clip counts as retrieved by a caption row if in its top DEPTH (default 100)")
    p.add_argument("--rrf_k", type=nonneg_int, default=60, help="RRF constant k in 1/(k + rank) (default 60, the fork's)")
    p.add_argument("--weights", default="auto", help="per-query weights for weighted_combsum: a .npy of shape "
                   "(K*N,) in row order (higher = better predicted query), or 'auto' (default): <run>/qpp/"
                   "weights.npy if it exists, or 'none'")
    p.add_argument("--legacy-weights", dest="legacy_weights", action="store_true",
                   help="reproduce the fork's inverted weighting: the weights file holds predicted within-clip "
                   "ranks r in 1..K (1 = predicted best) and w = r / (K(K+1)/2), so the predicted-best caption "
                   "gets the SMALLEST weight (docs/FUSION.md)")
    p.add_argument("--trec-depth", dest="trec_depth", type=positive_int, default=100,
                   help="documents per query in the .trec runs (default 100)")
    p.add_argument("--resamples", type=int_in(1, 10**8), default=10_000,
                   help="resamples of the paired randomisation tests and bootstrap CIs (default 10000)")
    p.add_argument("--device", default="cpu", help="cpu (numpy, default) or a GPU index N / cuda:N (torch)")
    p.add_argument("--no-plot", dest="plot", action="store_false", help="skip methods.png")
    p.add_argument("--quiet", action="store_true", help="no progress bars and no table on stdout")
    from fusion.qrels_eval import add_argument
    from fusion.systems_cli import add_arguments
    add_argument(p)  # --eval-qrels: multi-relevance metrics of the caption-query rows (fusion/qrels_eval.py)
    add_arguments(p)  # --runs: fusion of several systems (fusion/systems.py)
    return p


def main_from_args(args: argparse.Namespace) -> dict:
    if args.runs:
        from fusion.systems_cli import main_from_args as fuse_systems_main
        return fuse_systems_main(args)
    from fusion.systems_cli import check_no_systems_flags
    check_no_systems_flags(args)
    sims, manifest, run_dir, in_path = _resolve_input(args)
    from fusion.qrels_eval import load_eval_qrels
    eval_qrels = load_eval_qrels(args.eval_qrels, manifest)  # validated before anything is written
    methods = _parse_methods(args.methods)
    get_normalizer(args.norm)
    for flag, value, low in (("--depth", args.depth, 1), ("--rrf_k", args.rrf_k, 0),
                             ("--trec-depth", args.trec_depth, 1), ("--resamples", args.resamples, 1)):
        if value < low:
            raise UserError(f"{flag} must be >= {low}, got {value}")
    weights = _load_weights(args.weights, run_dir, manifest, args.legacy_weights)
    if weights is None:
        if "weighted_combsum" in methods and args.methods != "all":
            raise UserError(f"--methods weighted_combsum needs --weights FILE (or a run with qpp/weights.npy made "
                            f"for the {manifest.split} split)")
        methods = [m for m in methods if m != "weighted_combsum"]
    out = Path(args.out) if args.out else _default_out(run_dir, in_path, args.split)
    check_target(out, writer=WRITER)  # --out: absent or a previous fusion output (never a file or another's folder)
    from fusion.normalize import get_ops
    get_ops(args.device)  # fail on a bad --device before anything is written
    params = {"norm": args.norm, "depth": args.depth, "k": args.rrf_k, "weights": weights}
    try:
        with output_set(out, writer=WRITER) as tmp:  # complete-or-refuse: built aside, swapped in (utils/outputs)
            results = run_fusion(sims, manifest, tmp, methods, params, device=args.device, trec_depth=args.trec_depth,
                                 resamples=args.resamples, plot=args.plot, progress=not args.quiet,
                                 extra={"input": str(in_path), "legacy_weights": args.legacy_weights},
                                 eval_qrels=eval_qrels and (args.eval_qrels, eval_qrels))
    except FusionOverflow as err:  # the output set was discarded, nothing swapped in
        sims_file = in_path / "sims" / f"{args.split}.npy" if run_dir is not None else in_path
        raise UserError(err.describe(str(sims_file))) from None
    if not args.quiet:
        print(report.format_table(results))
        print(f"wrote {out}/results.json, results.md, {', '.join(m + '.{npy,json,trec}' for m in methods)}")
    return results


def run_fusion(sims: np.ndarray, manifest: SimsManifest, out_dir: str | os.PathLike, methods: Sequence[str],
               params: dict, *, device: str = "cpu", trec_depth: int = 100, resamples: int = 10_000,
               plot: bool = True, progress: bool = False, extra: dict | None = None, eval_qrels=None) -> dict:
    """Fuse with every method, evaluate on the same matrix, write the artefacts; returns results.json's dict.
    ``eval_qrels``: ``(path, Qrels)`` to score the unfused caption queries with multi-relevance metrics too."""
    out_dir = Path(out_dir)
    k = manifest.captions_per_clip
    n = len(manifest.clip_ids)
    rows = clip_rows(manifest)
    all_rows = np.arange(k * n).reshape(n, k) if rows is None else rows
    gt = manifest.gt_cols()

    caption_ranks = gt_ranks_t2a(sims, gt)
    by_clip = caption_ranks[all_rows]  # (N, K): rank of each caption of each clip
    systems = {"baseline_per_caption": caption_ranks, "baseline_caption0": by_clip[:, 0],
               "oracle_best_caption": by_clip.min(axis=1)}
    results = {"queries": n, "captions_per_clip": k, "candidates": n,
               **{name: metrics_from_ranks(r) for name, r in systems.items()},
               "baseline_per_caption_a2t": metrics_from_ranks(gt_ranks_a2t(sims, gt)),
               "methods": {}, "methods_a2t": {}}
    diag = np.arange(n)
    fused_rr = {}
    for name in tqdm(methods, desc="methods", disable=not progress):
        fused = fuse(name, sims, k, params=params, rows=rows, device=device, progress=progress, desc=name)
        ranks = gt_ranks_t2a(fused, diag)
        systems[name] = ranks
        fused_rr[name] = reciprocal_ranks(ranks)
        results["methods"][name] = metrics_from_ranks(ranks)
        results["methods_a2t"][name] = metrics_from_ranks(gt_ranks_a2t(fused, diag))
        used = {key: v for key, v in params.items() if key != "weights" and key in _own_params(name)}
        save_sims(out_dir, name, fused, fused_manifest(manifest, name, {"params": used, **(extra or {})}))
        write_trec_run(out_dir / f"{name}.trec", fused, manifest.clip_ids, manifest.clip_ids, name, trec_depth)
    write_trec_qrels(out_dir / "qrels.trec", {c: [c] for c in manifest.clip_ids})

    results["significance"] = caption_fusion_significance(fused_rr, reciprocal_ranks(by_clip).mean(axis=1), resamples)
    results["ci"] = {name: metric_cis(r, min(resamples, 2000)) for name, r in systems.items()}
    results["params"] = {key: v for key, v in params.items() if key != "weights"}
    results["protocol"] = PROTOCOL_NOTE
    if eval_qrels is not None:
        from fusion.qrels_eval import block, row_metrics
        results["multi_relevance"] = block(eval_qrels[0], eval_qrels[1],
                                           {"baseline_per_caption": row_metrics(sims, eval_qrels[1])})
    results.update(extra or {})
    if plot:
        from fusion.plot import plot_methods
        plot_methods(out_dir / "methods.png", systems, resamples=min(resamples, 2000))
    report.write_markdown(out_dir / "results.md", results)
    write_json(out_dir / "results.json", results)  # last: its presence means the folder is complete
    return results


def clip_rows(manifest: SimsManifest) -> np.ndarray | None:
    """``(N, K)`` query rows of each clip from the manifest's qrels (``None`` = clip-major, the fast path)."""
    try:
        return group_rows(manifest.gt_cols(), len(manifest.clip_ids), manifest.captions_per_clip)
    except ValueError:
        counts = np.bincount(manifest.gt_cols(), minlength=len(manifest.clip_ids))
        j = int(np.flatnonzero(counts != manifest.captions_per_clip)[0])
        raise UserError(f"clip {manifest.clip_ids[j]!r} has {counts[j]} caption queries in the manifest's qrels, "
                        f"expected captions_per_clip={manifest.captions_per_clip}") from None


def _own_params(name: str) -> set[str]:
    import inspect
    return set(inspect.signature(get_fuser(name)).parameters)


def _parse_methods(spec: str) -> list[str]:
    if spec == "all":
        return list(FUSERS)
    names = [m.strip() for m in spec.split(",") if m.strip()]
    if not names:
        raise UserError("--methods is empty")
    for name in names:
        get_fuser(name)
    return list(dict.fromkeys(names))


def _resolve_input(args) -> tuple[np.ndarray, SimsManifest, Path | None, Path]:
    given = [flag for flag, v in (("--config", args.config), ("--run", args.run), ("--sims", args.sims)) if v]
    if len(given) != 1:
        raise UserError(f"give exactly one input of --config, --run, --sims, or --runs A B ... to fuse systems "
                        f"(got {', '.join(given) or 'none'})")
    if args.eval_from_training_config and not args.config:
        raise UserError("--eval_from_training_config needs --config")
    if args.captions_per_clip is not None and not args.sims:
        raise UserError("--captions_per_clip applies to --sims only (a run's manifest says K)")
    if args.config:
        from utils.paths import newest_run_of_config
        run_dir = newest_run_of_config(args.config)
        sims, manifest = load_sims(run_dir, args.split)
        return sims, manifest, run_dir, run_dir
    if args.run:
        run_dir = Path(args.run)
        if not run_dir.is_dir():
            raise UserError(f"--run {run_dir}: not a folder")
        sims, manifest = load_sims(run_dir, args.split)
        return sims, manifest, run_dir, run_dir
    path = Path(args.sims)
    from fusion.trec_input import TREC_SUFFIXES, load_trec_pair
    if path.suffix in TREC_SUFFIXES:  # another tool's run of the caption queries, with its qrels
        sims, manifest = load_trec_pair(path, args.qrels, args.split)
        return sims, manifest, None, path
    if path.suffix == ".npy" and path.with_suffix(".json").is_file():
        sims, manifest = load_sims(path)
        if args.captions_per_clip not in (None, manifest.captions_per_clip):
            raise UserError(f"--captions_per_clip {args.captions_per_clip} disagrees with "
                            f"{path.with_suffix('.json')} (captions_per_clip={manifest.captions_per_clip})")
    else:
        sims, manifest = read_bare_sims(path, 5 if args.captions_per_clip is None else args.captions_per_clip)
    return sims, manifest, None, path


def _default_out(run_dir: Path | None, in_path: Path, split: str) -> Path:
    if run_dir is not None:
        return run_dir / ("fusion" if split == "test" else f"fusion-{split}")
    return in_path.parent / f"{in_path.stem}-fusion"


def _load_weights(spec: str, run_dir: Path | None, manifest: SimsManifest, legacy: bool) -> np.ndarray | None:
    """Per-query weights in the manifest's row order, validated; ``None`` when there are none."""
    if spec == "none":
        return None
    if spec == "auto":
        path = run_dir / "qpp" / "weights.npy" if run_dir is not None else None
        if path is not None:
            recover(path.parent)  # a qpp re-run killed mid-swap: put its complete old set back first
        if path is not None and (path.is_file() or (path.parent / RECORD).is_file()):
            # a qpp folder is used only when complete and unchanged (a killed re-run must not mix its files)
            require_complete(path.parent, ["weights.npy"], rerun=f"qpp.py --run {run_dir}")
            if path.with_suffix(".json").is_file():
                verify_recorded_file(path.with_suffix(".json"), rerun=f"qpp.py --run {run_dir}")
                meta = read_json(path.with_suffix(".json"))
                made_for = meta.get("split", "test") if isinstance(meta, dict) else "test"
                if made_for != manifest.split:  # qpp.py predicts the test split: fusing val gets no weights
                    if legacy:
                        raise UserError(f"--legacy-weights: {path} weights the {made_for} split, not "
                                        f"{manifest.split}; give --weights FILE for it")
                    print(f"note: {path} weights the {made_for} split; the {manifest.split} split is fused "
                          "without weights (weighted_combsum skipped)", file=sys.stderr)
                    return None
        if path is None or not path.is_file():
            if legacy:
                raise UserError("--legacy-weights needs --weights FILE (no qpp/weights.npy found)")
            return None
    else:
        path = Path(spec)
        if not path.is_file():
            raise UserError(f"--weights {path}: file not found")
        verify_recorded_file(path, rerun="qpp.py")
        if path.with_suffix(".json").is_file():
            verify_recorded_file(path.with_suffix(".json"), rerun="qpp.py")
    weights = read_npy(path)
    n_rows = len(manifest.query_ids)
    if weights.ndim != 1 or weights.shape[0] != n_rows or not np.issubdtype(weights.dtype, np.number):
        raise UserError(f"{path}: weights must be numeric of shape ({n_rows},) (one per query row), "
                        f"got {weights.dtype} {weights.shape}")
    weights = _align_weights(path, weights.astype(np.float64), manifest)
    with np.errstate(over="ignore", invalid="ignore"):
        bad = np.flatnonzero(~np.isfinite(weights.astype(np.float32)) | (weights < 0))  # fusion runs in float32
    if bad.size:
        raise UserError(f"{path}: weight {weights[bad[0]]} of query {manifest.query_ids[bad[0]]!r} is not a "
                        "non-negative number finite in float32")
    if legacy:
        try:
            weights = fork_rank_weights(weights, manifest.captions_per_clip)
        except ValueError as err:
            raise UserError(f"{path}: --legacy-weights expects predicted within-clip ranks: {err}") from None
    _require_a_weight_per_clip(path, weights, manifest)
    return weights


def _require_a_weight_per_clip(path: Path, weights: np.ndarray, manifest: SimsManifest) -> None:
    """A clip whose K weights are all 0 (in the float32 the kernels use) gets a constant weighted-CombSum row: every
    candidate scores 0 and its rank means nothing. Refused, naming the first such clip."""
    rows = clip_rows(manifest)
    k = manifest.captions_per_clip
    by_clip = weights.astype(np.float32)[np.arange(len(weights)).reshape(-1, k) if rows is None else rows]
    dead = np.flatnonzero(~by_clip.any(axis=1))
    if dead.size:
        raise UserError(f"{path}: every weight of clip {manifest.clip_ids[dead[0]]!r} ({k} caption queries) is 0 "
                        f"({dead.size} such clip{'s' if dead.size > 1 else ''}): weighted CombSum would score every "
                        "candidate 0 for it")


def _align_weights(path: Path, weights: np.ndarray, manifest: SimsManifest) -> np.ndarray:
    """If a ``.json`` beside the weights lists ``query_ids``, reorder the weights to the manifest's row order."""
    side = path.with_suffix(".json")
    if not side.is_file():
        return weights
    meta = read_json(side)
    ids = meta.get("query_ids") if isinstance(meta, dict) else None
    if ids is None:
        return weights
    if len(set(ids)) != len(ids):
        seen: set = set()
        raise UserError(f"{side}: query_ids lists {next(q for q in ids if q in seen or seen.add(q))!r} twice")
    if len(ids) != len(weights) or set(ids) != set(manifest.query_ids):
        missing = sorted(set(manifest.query_ids) - set(ids))[:1] or sorted(set(ids) - set(manifest.query_ids))[:1]
        raise UserError(f"{side}: query_ids disagree with the sims manifest (first differing id: {missing})")
    position = {q: i for i, q in enumerate(ids)}
    return weights[[position[q] for q in manifest.query_ids]]
