"""Training loop (docs/TRAINING.md): one run = one seed = one run folder (docs/FORMATS.md).

* Data is loaded once into tensors; a batch is built by vectorised indexing (trainer/batches.py: no collate, no
  workers, one seeded plan per epoch, so a resumed run gets identical batches).
* Validation every epoch on caption 0 of each val clip (N x N sims, t2a metrics); best epoch by val t2a
  geometric_mean_R1-R5-R10 with ``>=`` (a later epoch wins ties); a CPU copy of the best weights is kept.
* A "last" checkpoint (model, optimizer, scheduler, RNG, epoch, best so far + its weights) is written atomically
  every ``trainer.save_period`` epochs; ``fit(..., resume=run_dir)`` continues from it and ends with the same
  numbers as an uninterrupted run (same device, same seed).
* At the end (trainer/final_eval.py): best weights -> test sims with all captions, dumps, trained_model.pth,
  metrics.json (last).
"""
from __future__ import annotations

import math
import os
import sys
import time
from pathlib import Path
from typing import Callable

import torch

from model.build import build_model, count_parameters
from model.loss import MaxMarginRankingLoss
from retrieval.metrics import clip_major_gt_cols, t2a_metrics
from trainer.batches import epoch_plan, make_batch
from trainer.checkpoint import LAST_NAME, cpu_state_dict, rng_state, set_rng_state
from trainer.distributed import current_context
from trainer.export import TensorSplit, compute_sims
from trainer.final_eval import evaluate_and_write
from trainer.guards import (check_finite_loss, check_finite_sims, discard_on_failure, discard_run_dir, resume_command,
                            write_run_env)
from trainer.optim import build_optimizer, build_scheduler
from trainer.precision import autocast, precision_of, prepare_model, prepare_optimizer, store_features
from trainer.run_lock import RunFolderLock
from trainer.run_log import MONITOR, close_logger, format_metrics, make_logger, silent_logger
from trainer.run_open import archive_sizes, load_data, load_splits, open_run
from trainer.runtime import resolve_device, set_seeds
from utils.errors import UserError, say_line, sigterm_deferred
from utils.io import sweep_stale_temps, write_json
from utils.paths import experiment_name, make_run_dir
from utils.testhooks import pause

__all__ = ["fit", "load_splits"]  # load_splits: trainer/run_open.py, re-exported for the benchmarks and tests


# ---------------------------------------------------------------------------------------------- main entry
def fit(config: dict, config_path: str | os.PathLike | None, device: torch.device | str | None = None,
        resume: str | os.PathLike | None = None, *, quiet: bool = False,
        stop_after_epochs: int | None = None, data: dict[str, TensorSplit] | None = None,
        splits_loader: Callable[[dict, list[str]], dict[str, TensorSplit]] | None = None,
        threads: int | None = None, force_threads: bool = False, force_world_size: bool = False) -> Path:
    """Train one seed (``config["seed"]``) and write its run folder; returns the run folder.

    ``resume``: a run folder holding ``checkpoint-last.pth``; training continues after its epoch.
    ``stop_after_epochs`` (tests): return right after that epoch's checkpoint, as if the process were killed.
    ``data``: preloaded ``{split: TensorSplit}`` (benchmarks, tests); otherwise loaded with ``load_clotho``.
    ``threads``: torch CPU threads (default: $OMP_NUM_THREADS, else all available CPUs; on resume the run's
    recorded count, and another one only with ``force_threads``). ``force_world_size``: resume with another number
    of processes than the checkpoint's (other bits).
    """
    lock = RunFolderLock()  # the writing process holds the run folder until its results are written (run_lock.py)
    try:
        return _fit_locked(config, config_path, device, resume, lock, quiet=quiet, stop_after_epochs=stop_after_epochs,
                           data=data, splits_loader=splits_loader, threads=threads,
                           force=(force_threads, force_world_size))
    finally:
        lock.release()


def _fit_locked(config, config_path, device, resume, lock: RunFolderLock, *, quiet, stop_after_epochs, data,
                splits_loader, threads, force: tuple[bool, bool]) -> Path:
    t_start = time.perf_counter()
    device = device if isinstance(device, torch.device) else resolve_device(device)
    ddp = current_context()  # torchrun: rank 0 writes, the others train their shards (trainer/distributed.py)
    quiet = quiet or not ddp.is_writer
    # Each rank checks its own inputs; under torchrun the ranks settle each phase together (ddp.together): an error
    # on one rank stops every rank with its message, and every rank must have started the same run.
    with ddp.together(lambda: {"config": config, "resume": None if resume is None else str(resume)}):
        chash, run_dir, ckpt = open_run(config, config_path, resume, lock, device, threads, force)
    trainer_cfg = config["trainer"]
    seed = int(config.get("seed", 0))
    epochs = int(trainer_cfg["epochs"])
    dump_splits = list(trainer_cfg.get("dump_splits", ["val", "test"]))

    # Model first (RNG order as in the original), then the data, then (new runs) the run folder, so that bad
    # input fails before anything is written.
    set_seeds(seed)
    model = ddp.prepare_model(build_model(config).to(device))
    t0 = time.perf_counter()
    reads_archive = data is None and splits_loader is None
    with ddp.together(lambda: {"archive file sizes": archive_sizes(config) if reads_archive else None}):
        data = load_data(config, data, splits_loader, dump_splits)
    t_data = time.perf_counter() - t0
    fresh_dirs: list[Path] = []
    if ckpt is None:
        with ddp.together():
            if ddp.is_writer:
                exp_dir = Path(trainer_cfg["save_dir"]) / experiment_name(config_path)
                sweep_stale_temps(exp_dir, depth=3)  # killed runs: checkpoint and sims temporaries
                fresh_dirs = [d for d in (exp_dir, exp_dir.parent) if not d.exists()]  # removed again if the run fails
                run_dir = make_run_dir(trainer_cfg["save_dir"], experiment_name(config_path), seed)
        if ddp.active:
            run_dir = ddp.share_path(run_dir if ddp.is_writer else None)  # rank 0's new folder, on every rank
    new_run = ckpt is None and ddp.is_writer
    with discard_on_failure(run_dir, new_run=new_run, fresh_dirs=fresh_dirs):
        if new_run:
            lock.acquire(run_dir)  # a fresh folder: nobody else holds it
            write_json(run_dir / "config.json", config)
            write_run_env(run_dir, device, config_path, ddp.world_size)
        logger = make_logger(run_dir, quiet) if ddp.is_writer else silent_logger()
        try:
            return _fit(config, chash, run_dir, device, ckpt, logger, seed, epochs, quiet, stop_after_epochs,
                        model, data, t_data, dump_splits, splits_loader or load_splits, t_start)
        except KeyboardInterrupt:
            if ddp.is_writer:
                _report_interrupt(run_dir, new_run, fresh_dirs, logger, quiet)
            raise
        except RuntimeError:
            # torchrun: a rank that died shows here as a collective's error ("Connection closed by peer"), when it
            # comes before torchrun's SIGTERM; the job is over either way, so the run folder is left as on Ctrl-C
            if ddp.active and ddp.is_writer:
                _report_interrupt(run_dir, new_run, fresh_dirs, logger, quiet, "stopped by an error (here or on "
                                  "another rank)")
            raise
        finally:
            close_logger(logger)


def _report_interrupt(run_dir: Path, new_run: bool, fresh_dirs: list[Path], logger, quiet: bool,
                      event: str = "interrupted") -> None:
    """Ctrl-C: say where the run stands and how to continue it; a new run with nothing to resume from is removed."""
    with sigterm_deferred():  # torchrun's SIGTERM may come in the middle
        _report_stop(run_dir, new_run, fresh_dirs, logger, quiet, event)


def _report_stop(run_dir: Path, new_run: bool, fresh_dirs: list[Path], logger, quiet: bool, event: str) -> None:
    if (run_dir / LAST_NAME).is_file():
        message = (f"{event}: {run_dir} holds a resume checkpoint ({LAST_NAME}); continue with "
                   f"{resume_command(run_dir, current_context().world_size)}")
    elif new_run:
        message = f"{event} before the first checkpoint: {run_dir} removed (nothing to resume from)"
    else:
        message = f"{event}: {run_dir} unchanged"
    logger.info(message)  # train.log (and the console unless --quiet)
    if quiet:
        say_line(message)  # one write: other ranks print to the same terminal
    if new_run and not (run_dir / LAST_NAME).is_file():
        close_logger(logger)
        discard_run_dir(run_dir, fresh_dirs)


def _fit(config, chash, run_dir, device, ckpt, logger, seed, epochs, quiet, stop_after_epochs, model, data,
         t_data, dump_splits, splits_loader, t_start) -> Path:
    from tqdm import tqdm

    ddp = current_context()
    trainer_cfg = config["trainer"]
    mini_train = bool(trainer_cfg.get("mini_train", False))
    batch_size = int(config["data_loader"]["args"]["batch_size"])
    n_params = count_parameters(model)
    loss_cfg = config.get("loss", {}).get("args", {})
    criterion = MaxMarginRankingLoss(float(loss_cfg.get("margin", 0.2)), bool(loss_cfg.get("fix_norm", True)))
    optimizer = build_optimizer(config, model.parameters())
    scheduler = build_scheduler(config, optimizer)
    precision = precision_of(config)  # trainer/precision.py: float32 (exact) or bf16 autocast + fast paths
    prepare_model(model, precision)
    prepare_optimizer(optimizer, precision)

    # float32: only train + val are held during training; the evaluation-only splits are loaded after it, once
    # the training tensors are gone (peak memory: CLOTHO-size train+val ~1 GB, test ~0.35 GB). bf16: they were
    # loaded beside the compact train copy (fit(), holds_eval_splits).
    eval_splits = sorted(set(dump_splits) | {"test"}, key=["train", "val", "test"].index)
    # bf16: the training batches come from a bfloat16 copy of the train features (exact, half the memory;
    # trainer/precision.store_features). Validation and the final evaluation read the float32 splits.
    train = store_features(data["train"], precision).to(device)
    if "train" not in eval_splits:
        data.pop("train")  # the float32 train features are not needed any more
    val = data["val"].to(device)

    start_epoch, best, best_epoch, best_state, history = 1, -math.inf, 0, None, []
    from data.clotho import archive_stamp
    data_stamp = ckpt.get("data_stamp") if ckpt is not None else archive_stamp(config)  # what a resume must find
    timings = {"data_load_s": t_data, "train_s": 0.0, "val_s": 0.0, "checkpoint_s": 0.0}
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        set_rng_state(ckpt["rng"])
        start_epoch = int(ckpt["epoch"]) + 1
        best, best_epoch = float(ckpt["best"]), int(ckpt["best_epoch"])
        history = list(ckpt["history"])
        best_state = ckpt["best_state"] if ckpt["best_state"] is not None else cpu_state_dict(model)
        for k, v in ckpt.get("timings", {}).items():
            timings[k] = float(v)
        logger.info(f"resumed {run_dir} after epoch {start_epoch - 1} (best epoch {best_epoch}, geom {best:.2f})"
                    + (f" | {ddp.world_size} processes" if ddp.active else "")
                    + (f"; the checkpoint was written by {ckpt['processes']} (--force-world-size: other bits)"
                       if ckpt.get("processes", ddp.world_size) != ddp.world_size else ""))
    else:
        logger.info(f"run {run_dir} seed {seed} device {device} params {n_params:,} config {chash}"
                    + (f" | {ddp.world_size} processes, global batch {batch_size}" if ddp.active else ""))

    val_caps = list(range(int(config["data_loader"]["args"].get("num_test_captions", 1))))  # val captions used
    if len(val_caps) > val.captions_per_clip:
        raise UserError(f"config: data_loader.args.num_test_captions: {len(val_caps)} > the val split's "
                        f"{val.captions_per_clip} captions per clip")
    val_gt = clip_major_gt_cols(val.n, len(val_caps))
    save_period = int(trainer_cfg.get("save_period", 1))
    for epoch in range(start_epoch, epochs + 1):
        t_ep = time.perf_counter()
        model.train()
        plan = epoch_plan(seed, epoch, train.n, train.captions_per_clip, batch_size, mini_train)
        bar = tqdm(plan, desc=f"epoch {epoch}/{epochs}", disable=quiet, leave=False, file=sys.stderr)
        loss_sum = 0.0
        for idx, caps in bar:
            experts, ind, text, lens = make_batch(train, *ddp.shard(idx, caps), device)
            with autocast(precision, device):
                sims = ddp.sims(model, experts, ind, text, lens)  # one process: model(experts, ind, text, lens)
            loss = criterion(sims)
            loss.backward()
            ddp.sync_gradients(model)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)  # frees the gradients between steps (peak memory)
            pause(f"train-step@{epoch}")  # crash tests (utils/testhooks.py)
            loss_val = float(loss.detach())
            if not math.isfinite(loss_val):
                check_finite_loss(loss_val, epoch, [train.clip_ids[i] for i in idx], (experts, text))
            loss_sum += loss_val
            bar.set_postfix(loss=f"{loss_val:.4f}")
        bar.close()
        t_tr = time.perf_counter()
        timings["train_s"] += t_tr - t_ep

        with autocast(precision, device):
            val_sims = compute_sims(model, val, device, caption_indices=val_caps)
        check_finite_sims(val_sims, "val", val.clip_ids, len(val_caps), epoch)
        val_m = t2a_metrics(val_sims, val_gt)
        val_loss = float(criterion(torch.from_numpy(val_sims[::len(val_caps)])))
        lr = optimizer.param_groups[0]["lr"]
        scheduler.step()
        timings["val_s"] += time.perf_counter() - t_tr
        improved = val_m[MONITOR] >= best
        if improved:
            best, best_epoch = val_m[MONITOR], epoch
            if best_state is None:
                best_state = cpu_state_dict(model)
            else:  # overwrite in place: never two best copies alive at once (peak memory)
                for k, v in model.state_dict().items():
                    best_state[k].copy_(v)
        history.append({"epoch": epoch, "lr": lr, "steps": len(plan), "train_loss": loss_sum / len(plan),
                        "val_loss": val_loss,
                        "val": val_m, "epoch_s": time.perf_counter() - t_ep})
        logger.info(f"epoch {epoch:3d} lr {lr:.5f} loss {loss_sum / len(plan):.4f} val_loss {val_loss:.4f} | "
                    f"val t2a {format_metrics(val_m)}{' *' if improved else ''} | {time.perf_counter() - t_ep:.1f}s")

        if epoch == epochs:
            break  # no "last" checkpoint after the final epoch: it would be deleted right after the evaluation
            # (a kill during the evaluation resumes from the previous epoch, with the same result)
        if epoch % save_period:
            continue  # resume checkpoints every trainer.save_period epochs (~370 MB each); a kill redoes the rest
        t_ck = time.perf_counter()
        ddp.save_checkpoint(run_dir / LAST_NAME, {
            "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(), "rng": rng_state(), "epoch": epoch,
            "best": best, "best_epoch": best_epoch, "history": history, "config_hash": chash, "timings": timings,
            "threads": torch.get_num_threads(), "data_stamp": data_stamp, "processes": ddp.world_size,
            # the best weights are the current ones whenever this epoch improved: don't store them twice
            "best_state": None if best_epoch == epoch else best_state,
        })
        timings["checkpoint_s"] += time.perf_counter() - t_ck
        if stop_after_epochs is not None and epoch >= stop_after_epochs and epoch < epochs:
            logger.info(f"stopping after epoch {epoch} (as if killed); resume with --resume {run_dir}")
            return run_dir

    # ------------------------------------------------------------------------------------------ final evaluation
    if ddp.active:  # rank 0 evaluates its own copy: compared once more (the epochs after the last checkpoint)
        ddp.check_replicas(model.state_dict())
    if not ddp.is_writer:
        return run_dir  # distributed: rank 0 evaluates and writes
    del optimizer, scheduler  # ~3x the model size of state, not needed any more (peak memory)
    if "train" not in eval_splits:
        del train
    evaluate_and_write(model, best_state, config=config, chash=chash, run_dir=run_dir, device=device, seed=seed,
                       best_epoch=best_epoch, history=history, data=data, eval_splits=eval_splits,
                       dump_splits=dump_splits, splits_loader=splits_loader, timings=timings, logger=logger,
                       t_start=t_start)
    return run_dir
