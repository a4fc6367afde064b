"""Query performance prediction on the caption queries of a run, and QPP-weighted fusion (docs/QPP.md).

    python qpp.py --config configs/clotho/train-vggish-vggsound.json --eval_from_training_config
    python qpp.py --run data/saved/<experiment>/<run-id> [--features text,score,variation] [--cv 5]
    python qpp.py --trec-run test.trec --qrels test-qrels.trec --fit-trec-run val.trec --fit-qrels val-qrels.trec
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import qpp  # noqa: F401  (sets OMP_WAIT_POLICY before any OpenMP runtime loads)
from fusion.methods import FusionOverflow
from qpp.features import FEATURE_GROUPS, GROUP_HELP
from qpp.models import MODEL_HELP, MODELS
from qpp.fork import run_fork
from qpp.run import DEFAULT_FEATURES, FIT_SPLITS, run_qpp
from qpp.run_inputs import parse_list
from qpp.targets import TARGETS
from qpp.weights import MAPPINGS
from utils.cli import ArgumentParser, int_in, positive_float, seed_int
from utils.errors import UserError, run_cli


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="qpp.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_argument_group("which run")
    src.add_argument("--config", help="training config: uses the newest complete run of its experiment under config "
                                      "trainer.save_dir (--eval_from_training_config says the same, as in fusion.py)")
    src.add_argument("--eval_from_training_config", action="store_true",
                     help="pick the newest complete run (metrics.json present) of --config's experiment")
    src.add_argument("--custom_args", default=None, help="config overrides 'a.b=1,c.d=x' applied when reading --config")
    src.add_argument("--run", help="a run folder data/saved/<experiment>/<run-id> (needs sims/test.npy + .json)")
    src.add_argument("--trec-run", dest="trec_run", help="instead of a run folder: a TREC run of the test caption "
                     "queries (any tool's), with --qrels; score features only (default --features score,variation)")
    src.add_argument("--qrels", help="TREC qrels of --trec-run: each query's one relevant clip (K queries per clip)")
    src.add_argument("--fit-trec-run", dest="fit_trec_run", help="TREC run of the fitting (val) queries, with "
                     "--fit-qrels (else use --cv K)")
    src.add_argument("--fit-qrels", dest="fit_qrels", help="TREC qrels of --fit-trec-run")
    q = p.add_argument_group("protocol")
    q.add_argument("--fit-split", default="val", choices=FIT_SPLITS,
                   help="split to fit the predictors on (default val: queries the embedding model never trained on); "
                        "'train' reproduces the fork's in-sample protocol and needs sims/train.npy")
    q.add_argument("--cv", type=int_in(2), default=None, metavar="K",
                   help="instead of --fit-split, cross-fit on test with K folds grouped by clip (GroupKFold); "
                        "2 <= K <= the number of test clips")
    q.add_argument("--target", default="log2_rank", choices=TARGETS,
                   help="what to predict per caption: log2 of the 1-based tie-averaged rank of its clip (default, "
                        "the fork's), reciprocal rank, or hit@10")
    q.add_argument("--features", default=",".join(DEFAULT_FEATURES),
                   help="comma-separated feature groups, each evaluated alone and all together: " +
                        "; ".join(f"{g} = {h}" for g, h in GROUP_HELP.items()) +
                        f" (default {','.join(DEFAULT_FEATURES)}; MiniLM costs ~15 s per 1000 captions on 2 cores "
                        "the first time, then it is cached under <run>/qpp/cache)")
    q.add_argument("--models", default=",".join(MODELS),
                   help="comma-separated regressors: " + "; ".join(f"{m} = {h}" for m, h in MODEL_HELP.items()))
    q.add_argument("--ltr", action="store_true",
                   help="also fit xgb_ltr: an XGBRanker (pairwise) with one query group per clip")
    q.add_argument("--seed", type=seed_int, default=0, help="seed of every model and of the fold assignment (default 0)")
    w = p.add_argument_group("weights and fusion")
    w.add_argument("--weights-model", default=None,
                   help="model whose predictions become the fusion weights (default: selected, together with the "
                        "feature group and the temperature, among linear and xgboost by fused mAP@10 on the fitting "
                        "split's own cross-fitted predictions; never on test)")
    w.add_argument("--mapping", default="auto", choices=("auto",) + tuple(MAPPINGS),
                   help="prediction -> weight within the clip: softmax of -pred/T; rank: proportional to K+1-r "
                        "(r = predicted rank, 1 = best); fork: r/sum(r), the fork's inverted weights (for "
                        "comparison); auto (default): softmax or rank, whichever fuses best on the fitting split")
    w.add_argument("--temperature", type=positive_float, default=None,
                   help="softmax temperature in target units (default: tuned among 0.125..4 and inf=CombSum by "
                        "fused mAP@10 on the fitting split's own cross-fitted predictions; never on test)")
    w.add_argument("--n-resamples", type=int_in(1, 10**8), default=10_000,
                   help="paired randomisation test resamples (default 10000; the smallest reportable p is "
                        "1/(N+1))")
    o = p.add_argument_group("other")
    o.add_argument("--reproduce-fork", action="store_true",
                   help="run the fork's recipe instead: sentence embeddings only (all-MiniLM-L6-v2 bundled offline; "
                        "the fork used msmarco-MiniLM-L6-cos-v5: give its folder with --encoder), LR/MLP/GBR fit in-sample on train "
                        "(needs sims/train.npy), ordinal log2 ranks, inverted r/15 weights; writes <run>/qpp/fork/")
    o.add_argument("--encoder", default=None, metavar="PATH",
                   help="with --reproduce-fork: a local sentence-transformers model folder to embed the captions "
                        "with (e.g. msmarco-MiniLM-L6-cos-v5, the fork's); default the bundled all-MiniLM-L6-v2")
    o.add_argument("--device", default="cpu", help="accepted for symmetry with train.py; MiniLM runs on cpu")
    o.add_argument("--out", default=None, help="output folder (default <run>/qpp)")
    o.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    return p


def resolve_run(args) -> Path:
    if args.trec_run or args.qrels or args.fit_trec_run or args.fit_qrels:
        return _resolve_trec(args)
    if args.run and (args.config or args.eval_from_training_config):
        raise UserError("give either --run or --config --eval_from_training_config, not both")
    if args.run:
        run = Path(args.run)
        if not run.is_dir():
            raise UserError(f"{run}: run folder not found")
        return run
    if args.eval_from_training_config and not args.config:
        raise UserError("--eval_from_training_config needs --config")
    if args.config:  # as in fusion.py, --config alone means the newest complete run of its experiment
        from utils.paths import newest_run_of_config

        return newest_run_of_config(args.config, args.custom_args)
    raise UserError("name a run: --run RUN, or --config CFG (its newest complete run)")


def _resolve_trec(args) -> Path:
    from qpp.trec_input import TREC_FEATURES, materialise_trec_input

    if not (args.trec_run and args.qrels):
        raise UserError("TREC input needs --trec-run FILE and --qrels FILE")
    if args.run or args.config or args.eval_from_training_config or args.reproduce_fork:
        raise UserError("--trec-run replaces --run / --config and does not combine with --reproduce-fork")
    if args.fit_trec_run is None and args.cv is None:
        raise UserError("--trec-run: give the fitting queries (--fit-trec-run FILE --fit-qrels FILE) or --cv K")
    if args.features == ",".join(DEFAULT_FEATURES):
        args.features = ",".join(TREC_FEATURES)
    bad = [f for f in parse_list(args.features, FEATURE_GROUPS, "feature group") if f not in TREC_FEATURES]
    if bad:
        raise UserError(f"--features {','.join(bad)}: a TREC run has no caption text; use {','.join(TREC_FEATURES)}")
    if args.cv is not None and args.cv < 2:
        raise UserError(f"--cv must be >= 2, got {args.cv}")
    run = Path(args.trec_run)
    args.out = args.out or str(run.parent / f"{run.stem}-qpp")
    return materialise_trec_input(args.trec_run, args.qrels, args.fit_trec_run, args.fit_qrels, args.out)


def main(argv=None) -> dict:
    args = build_parser().parse_args(argv)
    run = resolve_run(args)
    if args.cv is not None and args.cv < 2:
        raise UserError(f"--cv must be >= 2, got {args.cv}")
    if args.temperature is not None and not args.temperature > 0:
        raise UserError(f"--temperature must be > 0, got {args.temperature}")
    if args.encoder is not None and not args.reproduce_fork:
        raise UserError("--encoder applies to --reproduce-fork only")
    if args.encoder is not None and not Path(args.encoder).is_dir():
        raise UserError(f"--encoder {args.encoder}: folder not found (a local sentence-transformers model folder)")
    try:
        if args.reproduce_fork:
            return run_fork(run, seed=args.seed, device=args.device, out_dir=args.out, n_resamples=args.n_resamples,
                            encoder=args.encoder)
        return run_qpp(run, fit_split=args.fit_split, cv=args.cv, features=parse_list(args.features, FEATURE_GROUPS,
                       "feature group"), models=parse_list(args.models, MODELS, "model"), ltr=args.ltr, seed=args.seed,
                       target=args.target, weights_model=args.weights_model, mapping=args.mapping,
                       temperature=args.temperature, device=args.device, out_dir=args.out,
                       n_resamples=args.n_resamples, plots=not args.no_plots)
    except FusionOverflow as err:  # a fused sum left float32 (fusion/methods.py); the output set was discarded
        raise UserError(err.describe(f"the run {run}")) from None


if __name__ == "__main__":
    sys.exit(run_cli(main))
