"""Train CE / MoEE text-to-audio retrieval on CLOTHO; one run folder per seed (docs/TRAINING.md).

    python train.py --config configs/clotho/train-vggish-vggsound.json --device cpu --seeds 0,1,2
    python train.py --resume data/saved/<experiment>/<run-id>          # continue a killed run
    torchrun --standalone --nproc_per_node 2 train.py --config ... --device cpu   # data-parallel (docs/DISTRIBUTED.md)
"""
from __future__ import annotations

import argparse
from typing import Sequence

# Before torch loads OpenMP: worker threads spin briefly, then sleep (utils/openmp_env.py has the measurements).
from utils.openmp_env import configure_openmp_waiting  # noqa: E402 - must precede every torch import

configure_openmp_waiting()

from utils.cli import ArgumentParser, positive_int, thread_count
from utils.errors import UserError, exit_process, run_cli, sigterm_as_interrupt


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(
        prog="python train.py",
        description="Train the CE / MoEE model, select the best epoch on val (t2a geometric mean of R1/R5/R10), "
                    "evaluate it on test with all 5 captions and write data/saved/<experiment>/<run-id>/ "
                    "(config.json, trained_model.pth, sims/<split>.npy+.json, train.log, metrics.json last). "
                    "Data-parallel: torchrun --nproc_per_node N train.py ... (gloo on CPU, NCCL on CUDA; the global "
                    "batch stays the config's batch_size; docs/DISTRIBUTED.md).")
    p.add_argument("--config", help="config JSON, e.g. configs/clotho/train-vggish-vggsound.json "
                                    "(optional with --resume: the run's config.json is used)")
    p.add_argument("--device", default=None,
                   help="cpu, cuda, or a CUDA device index N; default: CUDA when available, else CPU. "
                        "Asking for a GPU on a machine without CUDA is an error (exit 2)")
    p.add_argument("--seeds", default=None,
                   help="comma-separated seeds, one run per seed, e.g. 0,1,2 (default: the config's seed). With "
                        "several seeds a mean ± std table is printed and written as "
                        "<save_dir>/<experiment>/summary-<timestamp>.md/.json")
    p.add_argument("--resume", default=None, metavar="RUN_DIR",
                   help="continue a killed run from its checkpoint-last.pth; ends with the same numbers as an "
                        "uninterrupted run (same device). --config/--custom_args, if given, must resolve to the "
                        "run's config.json")
    p.add_argument("--custom_args", default=None,
                   help='config overrides "key.sub=value,...", e.g. "optimizer.args.lr=0.005,trainer.epochs=5"')
    p.add_argument("--epochs", type=positive_int, default=None, help="shorthand for trainer.epochs=N")
    p.add_argument("--mini_train", action="store_true",
                   help="shorthand for trainer.mini_train=true: only 5 batches per epoch (smoke tests)")
    p.add_argument("--threads", type=thread_count, default=None,
                   help="torch CPU threads (default: $OMP_NUM_THREADS, else all available CPUs; with --resume the "
                        "count recorded in the run's run.json, since the count changes the numbers); on a CPU shared "
                        "with other busy processes 1 can be much faster")
    p.add_argument("--force-threads", action="store_true",
                   help="with --resume: accept a --threads different from the run's recorded count (the resumed "
                        "run then no longer matches an uninterrupted one bit for bit)")
    p.add_argument("--force-world-size", action="store_true",
                   help="with --resume: accept another number of processes (torchrun world size; 1 without torchrun) "
                        "than the one that wrote the run's checkpoint (the resumed run then no longer matches an "
                        "uninterrupted one bit for bit)")
    p.add_argument("--precision", default=None, choices=["float32", "bf16"],
                   help="shorthand for trainer.precision: float32 (today's numbers bit for bit) or bf16 (bfloat16 "
                        "autocast on CPU/CUDA, float32 master weights; the config default, ~2x faster on CPUs "
                        "with AVX-512 BF16); see docs/TRAINING.md")
    p.add_argument("--quiet", action="store_true", help="no progress bars or per-epoch lines on stderr "
                                                        "(train.log is still written)")
    return p


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    from trainer.distributed import init_distributed, shutdown_distributed
    from trainer.runtime import resolve_device

    with sigterm_as_interrupt():  # SIGTERM ends a run as Ctrl-C does (torchrun sends it when another rank fails)
        device = init_distributed(resolve_device(args.device))  # under torchrun: join the group, this rank's device
        try:
            _main(args, device)
        finally:
            shutdown_distributed()


def _main(args: argparse.Namespace, device) -> None:
    from pathlib import Path

    from trainer.distributed import current_context
    from trainer.summary import summarise_runs
    from trainer.trainer import fit
    from utils.config import load_config
    from utils.io import read_json

    if args.threads is not None and args.threads < 1:
        raise UserError(f"--threads: {args.threads}: must be >= 1")
    say = print if current_context().is_writer else (lambda *a, **k: None)  # distributed: rank 0 prints
    overrides = [args.custom_args] if args.custom_args else []
    if args.epochs is not None:
        if args.epochs < 1:
            raise UserError(f"--epochs: {args.epochs}: must be >= 1")
        overrides.append(f"trainer.epochs={args.epochs}")
    if args.mini_train:
        overrides.append("trainer.mini_train=true")
    if args.precision is not None:
        overrides.append(f"trainer.precision={args.precision}")
    custom = ",".join(overrides) or None

    if args.resume:
        run_dir = Path(args.resume)
        if args.seeds:
            raise UserError("--seeds cannot be combined with --resume (a run is one seed)")
        if args.config:
            config = load_config(args.config, custom)
            # --seeds wrote the run's seed into its config.json; the config file may hold another one
            saved = read_json(run_dir / "config.json") if (run_dir / "config.json").is_file() else {}
            config["seed"] = saved.get("seed", config["seed"])
        else:
            if custom:
                raise UserError("--custom_args/--epochs/--mini_train/--precision need --config when resuming")
            config = read_json(run_dir / "config.json")
        out = fit(config, args.config, device, resume=run_dir, quiet=args.quiet, threads=args.threads,
                  force_threads=args.force_threads, force_world_size=args.force_world_size)
        say(out)
        return

    if args.force_threads or args.force_world_size:
        raise UserError(f"--force-{'threads' if args.force_threads else 'world-size'} applies to --resume only")
    if not args.config:
        raise UserError("--config is required (unless --resume is given)")
    config = load_config(args.config, custom)
    seeds = [config["seed"]] if args.seeds is None else _parse_seeds(args.seeds)
    runs = []
    for seed in seeds:
        config = load_config(args.config, custom)
        config["seed"] = seed
        runs.append(fit(config, args.config, device, quiet=args.quiet, threads=args.threads))
        say(runs[-1])
    if len(runs) > 1 and current_context().is_writer:
        table, paths = summarise_runs(runs, config["trainer"]["save_dir"], args.config)
        print(table)
        print(f"summary: {paths[0]}")


def _parse_seeds(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.strip().split(",")]  # an empty item ("0,,1") is a typo, not a separator
    except ValueError:
        raise UserError(f"--seeds: '{text}': expected comma-separated integers, e.g. 0,1,2") from None
    bad = [s for s in seeds if not 0 <= s < 2**32]
    if bad:
        raise UserError(f"--seeds: {bad[0]}: a seed must be in 0..{2**32 - 1}")
    if not seeds:
        raise UserError("--seeds: no seed given")
    if len(set(seeds)) != len(seeds):
        raise UserError(f"--seeds: '{text}': duplicate seed")
    return seeds


if __name__ == "__main__":
    exit_process(run_cli(main))
