"""Training loop (docs/TRAINING.md): one run = one seed = one run folder (docs/FORMATS.md).

* Data is loaded once into tensors; a batch is built by vectorised indexing (no collate, no workers).
* Epoch e draws its clip order and one caption per clip from ``numpy.random.default_rng([seed, e])``, so the
  batches of an epoch do not depend on what happened before it (resume gives identical batches).
* Validation every epoch on caption 0 of each val clip (N x N sims, t2a metrics); best epoch by val t2a
  geometric_mean_R1-R5-R10 with ``>=`` (a later epoch wins ties); a CPU copy of the best weights is kept.
* A "last" checkpoint (model, optimizer, scheduler, RNG, epoch, best so far + its weights) is written atomically
  after every epoch; ``fit(..., resume=run_dir)`` continues from it and ends with the same numbers as an
  uninterrupted run (same device, same seed).
* At the end: best weights -> test sims with all captions, dumps, trained_model.pth, metrics.json (last).
"""
from __future__ import annotations

import logging
import math
import os
import random
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from model.build import build_model, count_parameters
from model.loss import MaxMarginRankingLoss
from retrieval.metrics import both_directions, clip_major_gt_cols, t2a_metrics
from retrieval.sims_io import build_manifest, save_sims
from trainer.checkpoint import (FINAL_NAME, LAST_NAME, cpu_state_dict, load_checkpoint, rng_state,
                                save_checkpoint, set_rng_state)
from trainer.distributed import current_context
from trainer.export import TensorSplit, as_tensor_split, compute_sims
from trainer.guards import (check_checkpoint_identity, check_disjoint_splits, check_finite_loss, check_finite_sims,
                            discard_on_failure, preflight_splits, resume_threads, write_run_env)
from trainer.optim import build_optimizer, build_scheduler
from trainer.precision import (autocast, check_supported, describe, holds_eval_splits, precision_of, prepare_model,
                               prepare_optimizer, store_features)
from utils.allocator import configure_memory
from utils.config import config_hash, first_difference
from utils.config_rules import check_values
from utils.errors import UserError
from utils.io import read_json, sweep_stale_temps, write_json
from utils.paths import COMPLETE_MARKER, experiment_name, make_run_dir
from utils.testhooks import pause

MONITOR = "geometric_mean_R1-R5-R10"
MINI_TRAIN_BATCHES = 5


# ---------------------------------------------------------------------------------------------- devices / seeds
def resolve_device(spec: str | None) -> torch.device:
    """``cpu`` | ``cuda`` | ``N`` (CUDA index) | None/"auto" (CUDA when available, else CPU)."""
    spec = "auto" if spec is None else str(spec).strip().lower()
    if spec == "cpu":
        return torch.device("cpu")
    if spec in ("auto", "cuda", ""):
        return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    index = spec[5:] if spec.startswith("cuda:") else spec
    if not index.isdigit():
        raise UserError(f"--device: '{spec}': expected cpu, cuda or a CUDA device index")
    if not torch.cuda.is_available():
        raise UserError(f"--device: '{spec}': CUDA is not available on this machine (use --device cpu)")
    if int(index) >= torch.cuda.device_count():
        raise UserError(f"--device: '{spec}': only {torch.cuda.device_count()} CUDA device(s) visible")
    return torch.device(f"cuda:{int(index)}")


def set_seeds(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def default_threads() -> int:
    """$OMP_NUM_THREADS if set, else every CPU this process may run on."""
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if env.isdigit() and int(env) > 0:
        return int(env)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


def configure_torch(device: torch.device, threads: int | None = None) -> None:
    """Deterministic algorithms (cheap here) and the CPU thread count.

    On a CPU shared with other busy processes, fewer threads can be much faster: OpenMP barriers spin on
    preempted cores (a (16, 768) BatchNorm went from 0.04 ms to 70 ms with 2 threads on 2 loaded cores).
    """
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    # torch.use_deterministic_algorithms itself, minus its import of torch._inductor (1.5 s per process here) to
    # set inductor's flag: nothing here compiles
    setter = getattr(torch._C, "_set_deterministic_algorithms", None)
    if setter is not None:
        setter(True, warn_only=True)
    else:
        torch.use_deterministic_algorithms(True, warn_only=True)
    # ...without its debugging aid of filling every new tensor with NaN: nothing here reads uninitialised
    # memory, and the fills cost ~11 % of a bf16 CPU step (every autocast weight cast allocates).
    torch.utils.deterministic.fill_uninitialized_memory = False
    torch.set_num_threads(threads if threads else default_threads())
    configure_memory()  # utils/allocator.py: fewer page faults, no huge-page stalls (same bits)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = False


# ---------------------------------------------------------------------------------------------- batching
def epoch_plan(seed: int, epoch: int, n_clips: int, n_captions: int, batch_size: int,
               mini_train: bool = False) -> list[tuple[np.ndarray, np.ndarray]]:
    """Batches of (clip indices, caption indices) for one epoch, from a per-epoch seeded generator.

    The last partial batch is kept (drop_last=False), except a final batch of a single clip, which BatchNorm
    cannot train on; it is dropped (only possible when n_clips % batch_size == 1).
    """
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(n_clips)
    caps = rng.integers(0, n_captions, size=n_clips)
    batches = []
    for start in range(0, n_clips, batch_size):
        idx = order[start:start + batch_size]
        if len(idx) < 2 and batches:
            break
        batches.append((idx, caps[idx]))
        if mini_train and len(batches) == MINI_TRAIN_BATCHES:
            break
    return batches


def make_batch(ts: TensorSplit, idx: np.ndarray, caps: np.ndarray, device: torch.device):
    i = torch.from_numpy(idx).to(ts.text.device)
    c = torch.from_numpy(caps).to(ts.text.device)
    experts = {m: t.index_select(0, i).to(device, non_blocking=True) for m, t in ts.experts.items()}
    ind = {m: t.index_select(0, i).to(device, non_blocking=True) for m, t in ts.ind.items()}
    text = ts.text[i, c].unsqueeze(1).to(device, non_blocking=True)          # (B, 1, L, Dt)
    lens = ts.text_lens[i, c].unsqueeze(1).to(device, non_blocking=True)     # (B, 1)
    return experts, ind, text, lens


# ---------------------------------------------------------------------------------------------- logging
def _make_logger(run_dir: Path, quiet: bool) -> logging.Logger:
    logger = logging.getLogger(f"train.{run_dir}")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    for h in list(logger.handlers):
        logger.removeHandler(h)
    fh = logging.FileHandler(run_dir / "train.log")
    fh.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    logger.addHandler(fh)
    if not quiet:
        sh = _TqdmHandler()
        sh.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(sh)
    return logger


class _TqdmHandler(logging.Handler):
    def emit(self, record):
        from tqdm import tqdm
        tqdm.write(self.format(record), file=sys.stderr)


def _silent_logger() -> logging.Logger:
    """Ranks other than 0 of a distributed run: no train.log, no output."""
    logger = logging.getLogger("train.silent")
    logger.propagate = False
    logger.disabled = True
    return logger


def _close_logger(logger: logging.Logger) -> None:
    for h in list(logger.handlers):
        h.close()
        logger.removeHandler(h)


def _fmt(m: dict[str, float]) -> str:
    return (f"R1 {m['R1']:.1f} R5 {m['R5']:.1f} R10 {m['R10']:.1f} R50 {m['R50']:.1f} "
            f"MedR {m['MedR']:.1f} MeanR {m['MeanR']:.1f} geom {m[MONITOR]:.2f}")


def _multi_relevance(config: dict, split: str, sims: np.ndarray, clip_ids, k: int) -> dict | None:
    """Metrics against the data set's multi-relevance qrels (``qrels-<split>.trec``, docs/METRICS.md), if any."""
    from data.clotho import root_feat_dir
    from data.synthetic import qrels_path
    from retrieval.qrels_metrics import qrels_file_metrics

    return qrels_file_metrics(sims, qrels_path(root_feat_dir(config), split), clip_ids, k)


# ---------------------------------------------------------------------------------------------- data
def load_splits(config: dict, splits: list[str]) -> dict[str, TensorSplit]:
    from data.clotho import load_clotho  # imported late: keeps model/optimizer tests free of data deps
    data = load_clotho(config, splits)
    return {name: as_tensor_split(sd) for name, sd in data.items()}


# ---------------------------------------------------------------------------------------------- main entry
def fit(config: dict, config_path: str | os.PathLike | None, device: torch.device | str | None = None,
        resume: str | os.PathLike | None = None, *, quiet: bool = False,
        stop_after_epochs: int | None = None, data: dict[str, TensorSplit] | None = None,
        splits_loader: Callable[[dict, list[str]], dict[str, TensorSplit]] | None = None,
        threads: int | None = None, force_threads: bool = False) -> Path:
    """Train one seed (``config["seed"]``) and write its run folder; returns the run folder.

    ``resume``: a run folder holding ``checkpoint-last.pth``; training continues after its epoch.
    ``stop_after_epochs`` (tests): return right after that epoch's checkpoint, as if the process were killed.
    ``data``: preloaded ``{split: TensorSplit}`` (benchmarks, tests); otherwise loaded with ``load_clotho``.
    ``threads``: torch CPU threads (default: $OMP_NUM_THREADS, else all available CPUs; on resume the run's
    recorded count, and another one only with ``force_threads``).
    """
    t_start = time.perf_counter()
    device = device if isinstance(device, torch.device) else resolve_device(device)
    ddp = current_context()  # torchrun: rank 0 writes, the others train their shards (trainer/distributed.py)
    quiet = quiet or not ddp.is_writer
    check_values(config, "config")  # also a run's config.json read back for --resume
    if resume is not None:
        if ddp.is_writer:
            sweep_stale_temps(resume, depth=2)  # temporaries of the killed process (a checkpoint write: up to 300 MB)
        threads = resume_threads(Path(resume), threads, force_threads)
    configure_torch(device, threads)
    trainer_cfg = config["trainer"]
    seed = int(config.get("seed", 0))
    epochs = int(trainer_cfg["epochs"])
    if epochs < 1:
        raise UserError("config: trainer.epochs must be >= 1")
    chash = config_hash(config)
    check_supported(precision_of(config), device)

    if resume is not None:
        run_dir = Path(resume)
        _check_resumable(run_dir, config, chash)
        ckpt = load_checkpoint(run_dir / LAST_NAME)
        check_checkpoint_identity(run_dir, ckpt, chash)
        for stale in run_dir.rglob(".*.tmp*"):  # temporaries of writes interrupted by the kill
            if ddp.is_writer:
                stale.unlink(missing_ok=True)
    else:
        if config_path is None:
            raise UserError("fit: config_path is required for a new run")
        ckpt = None
    dump_splits = list(trainer_cfg.get("dump_splits", ["val", "test"]))
    for s in dump_splits:
        if s not in ("train", "val", "test"):
            raise UserError(f"config: trainer.dump_splits: unknown split {s!r}")

    # Model first (RNG order as in the original), then the data, then (new runs) the run folder, so that bad
    # input fails before anything is written.
    set_seeds(seed)
    model = ddp.prepare_model(build_model(config).to(device))
    t0 = time.perf_counter()
    loader = splits_loader or load_splits
    preflight = data is None or splits_loader is not None  # every split the run needs, validated up front
    needed = [s for s in dump_splits + ["test"] if data is None or s not in data]
    # The evaluation-only splits are kept from this first read when the training copy of the train features is
    # compact (bf16; loaded after it, they add little to the peak); else they are checked here, freed, and read
    # again after training (peak memory).
    hold = preflight and ddp.is_writer and holds_eval_splits(precision_of(config), dump_splits)
    if preflight and not hold:
        preflight_splits(config, needed, loader, loader_reads_archive=splits_loader is None)
    elif hold and splits_loader is None:
        check_disjoint_splits(config)
    data = dict(data) if data is not None else loader(config, ["train", "val"])
    missing = [s for s in ("train", "val") if s not in data]
    if missing:
        raise UserError(f"data: split(s) {missing} not loaded")
    if data["train"].n < 2:
        raise UserError("data: the train split needs at least 2 clips")
    if hold:
        data["train"] = store_features(data["train"], precision_of(config))  # the float32 copy is freed here
        data.update(loader(config, [s for s in dict.fromkeys(needed) if s not in data]))
    t_data = time.perf_counter() - t0
    fresh_dirs: list[Path] = []
    if ckpt is None and ddp.is_writer:
        exp_dir = Path(trainer_cfg["save_dir"]) / experiment_name(config_path)
        sweep_stale_temps(exp_dir, depth=3)  # killed runs: checkpoint and sims temporaries
        fresh_dirs = [d for d in (exp_dir, exp_dir.parent) if not d.exists()]  # removed again if the run fails
        run_dir = make_run_dir(trainer_cfg["save_dir"], experiment_name(config_path), seed)
    if ckpt is None and ddp.active:
        run_dir = ddp.share_path(run_dir if ddp.is_writer else None)  # rank 0's new folder, on every rank
    new_run = ckpt is None and ddp.is_writer
    with discard_on_failure(run_dir, new_run=new_run, fresh_dirs=fresh_dirs):
        if new_run:
            write_json(run_dir / "config.json", config)
            write_run_env(run_dir, device)
        logger = _make_logger(run_dir, quiet) if ddp.is_writer else _silent_logger()
        try:
            return _fit(config, chash, run_dir, device, ckpt, logger, seed, epochs, quiet, stop_after_epochs,
                        model, data, t_data, dump_splits, splits_loader or load_splits, t_start)
        finally:
            _close_logger(logger)


def _check_resumable(run_dir: Path, config: dict, chash: str) -> None:
    if not run_dir.is_dir():
        raise UserError(f"--resume {run_dir}: no such run folder")
    if (run_dir / COMPLETE_MARKER).is_file():
        raise UserError(f"--resume {run_dir}: run is already complete ({COMPLETE_MARKER} exists)")
    if not (run_dir / LAST_NAME).is_file():
        raise UserError(f"--resume {run_dir}: no {LAST_NAME} (killed before the first epoch ended?); start a new run")
    saved = read_json(run_dir / "config.json")
    if config_hash(saved) != chash:
        key, was, now = first_difference(saved, config)
        raise UserError(f"--resume {run_dir}: config differs from the run's config.json ({key}: run has {was!r}, "
                        f"now {now!r})")


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
        logger.info(f"resumed {run_dir} after epoch {start_epoch - 1} (best epoch {best_epoch}, geom {best:.2f})")
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
                    f"val t2a {_fmt(val_m)}{' *' if improved else ''} | {time.perf_counter() - t_ep:.1f}s")

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
            "threads": torch.get_num_threads(),
            # the best weights are the current ones whenever this epoch improved: don't store them twice
            "best_state": None if best_epoch == epoch else best_state,
        })
        timings["checkpoint_s"] += time.perf_counter() - t_ck
        if stop_after_epochs is not None and epoch >= stop_after_epochs and epoch < epochs:
            logger.info(f"stopping after epoch {epoch} (as if killed); resume with --resume {run_dir}")
            return run_dir

    # ------------------------------------------------------------------------------------------ final evaluation
    if not ddp.is_writer:
        return run_dir  # distributed: rank 0 evaluates and writes
    del optimizer, scheduler  # ~3x the model size of state, not needed any more (peak memory)
    model.load_state_dict(best_state)
    model.eval()
    eval_device = device
    if config.get("eval_settings", {}).get("disable_gpu", True) and device.type != "cpu":
        eval_device = torch.device("cpu")  # the original evaluates on CPU (eval_settings.disable_gpu, the default)
        model.to(eval_device)
    best_val = next(h["val"] for h in history if h["epoch"] == best_epoch)
    source = {"run": run_dir.name, "checkpoint": FINAL_NAME, "config_hash": chash, "seed": seed}
    save_checkpoint(run_dir / FINAL_NAME, {"state_dict": best_state, "epoch": best_epoch, "config_hash": chash,
                                           "config": config})
    if "train" not in eval_splits:
        del train
    todo = [s for s in eval_splits if s not in data]
    if todo:
        t0 = time.perf_counter()
        data.update(splits_loader(config, todo))
        timings["data_load_s"] += time.perf_counter() - t0
    results: dict[str, Any] = {}
    multi_relevance: dict[str, Any] = {}
    eval_times = {}
    for split in eval_splits:
        t_ev = time.perf_counter()
        ts = data[split]
        sims = compute_sims(model, ts, eval_device)  # float32 in every mode: the dumped sims are what search.py scores
        K = ts.captions_per_clip
        check_finite_sims(sims, split, ts.clip_ids, K)
        results[split] = both_directions(sims, clip_major_gt_cols(ts.n, K))
        multi = _multi_relevance(config, split, sims, ts.clip_ids, K)  # extra judgements, when the data has them
        if multi is not None:
            multi_relevance[split] = multi
            logger.info(f"{split} multi-relevance t2a {_fmt(multi['t2a'])} mAP10 {multi['t2a']['mAP10']:.2f} "
                        f"mAP16 {multi['t2a']['mAP16']:.2f} nDCG10 {multi['t2a']['nDCG10']:.2f} ({multi['file']})")
        if split in dump_splits:
            save_sims(run_dir / "sims", split, sims,
                      build_manifest(split, ts.clip_ids, ts.captions, source, captions_per_clip=K))
        eval_times[split] = time.perf_counter() - t_ev
        logger.info(f"{split} ({K} captions/clip, {K * ts.n} x {ts.n}) t2a {_fmt(results[split]['t2a'])}")
        logger.info(f"{split} a2t {_fmt(results[split]['a2t'])}")
    timings["eval_s"] = eval_times
    timings["total_s"] = time.perf_counter() - t_start
    metrics = {
        "params": n_params,
        "best_epoch": best_epoch,
        "val": best_val,
        "test": results["test"],
        "seed": seed,
        "config_hash": chash,
        "epochs": epochs,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "numerics": describe(precision, device),  # what decides the bits: precision, device, threads, kernels
        "val_all_captions": results.get("val"),
        "train_all_captions": results.get("train"),
        "history": history,
        "timings": timings,
    }
    if multi_relevance:
        metrics["multi_relevance"] = multi_relevance  # {split: {"t2a", "a2t", "file", "graded"}}
    from trainer.curves import write_run_curves  # curves.png (+ TensorBoard events) from the per-epoch history
    write_run_curves(run_dir, history, best_epoch, tensorboard=bool(trainer_cfg.get("tensorboard", False)))
    from utils.outputs import RECORD, write_record  # sizes + sha256 of what readers use; metrics.json: the marker
    write_record(run_dir, "train.py", files=[p.relative_to(run_dir).as_posix() for p in sorted(run_dir.rglob("*"))
                                             if p.is_file() and p.name[0] != "." and p.suffix in (".json", ".npy")
                                             and p.name not in (COMPLETE_MARKER, RECORD)] + [FINAL_NAME])
    write_json(run_dir / COMPLETE_MARKER, metrics)
    (run_dir / LAST_NAME).unlink(missing_ok=True)  # run complete: nothing left to resume
    logger.info(f"done: best epoch {best_epoch}, test t2a R1 {results['test']['t2a']['R1']:.2f} "
                f"R10 {results['test']['t2a']['R10']:.2f}; {run_dir}")
    return run_dir


# ---------------------------------------------------------------------------------------------- multi-seed summary
def summarise_runs(run_dirs: list[Path], save_dir: str | os.PathLike, config_path: str | os.PathLike
                   ) -> tuple[str, tuple[Path, Path]]:
    """Mean ± std over seeds of the test metrics (as the original README: sample std, ddof 1, for R@k/MedR/MeanR/mAP10;
    population std, ddof 0, for the geometric mean). Writes ``summary-<timestamp>.md`` and ``.json`` under
    ``<save_dir>/<experiment>/``; returns the markdown table and the two paths."""
    import datetime as _dt

    from retrieval.metrics import METRIC_KEYS
    from utils.io import write_text

    per_run = [read_json(Path(r) / COMPLETE_MARKER) for r in run_dirs]
    rows, table = {}, []
    header = "| dir | " + " | ".join(METRIC_KEYS) + " |"
    table += [header, "|" + "---|" * (len(METRIC_KEYS) + 1)]
    for direction in ("t2a", "a2t"):
        stats = {}
        for key in METRIC_KEYS:
            vals = np.array([m["test"][direction][key] for m in per_run], dtype=np.float64)
            ddof = 0 if key == MONITOR else 1
            std = float(np.std(vals, ddof=ddof)) if len(vals) > ddof else None
            stats[key] = {"mean": float(vals.mean()), "std": std, "ddof": ddof, "values": vals.tolist()}
        rows[direction] = stats
        cells = [f"{s['mean']:.1f} ({s['std']:.1f})" if s["std"] is not None else f"{s['mean']:.1f}"
                 for s in stats.values()]
        table.append(f"| {direction} | " + " | ".join(cells) + " |")
    exp = experiment_name(config_path)
    stamp = _dt.datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    root = Path(save_dir) / exp
    md_path, json_path = root / f"summary-{stamp}.md", root / f"summary-{stamp}.json"
    md = (f"# {exp}: test, mean (std) over seeds {[m['seed'] for m in per_run]}\n\n"
          "std: ddof 1 for R@k, MedR, MeanR, mAP10; ddof 0 for the geometric mean (as the original README).\n\n"
          + "\n".join(table) + "\n\nruns:\n" + "".join(f"- {r}\n" for r in run_dirs))
    write_text(md_path, md)
    write_json(json_path, {"experiment": exp, "seeds": [m["seed"] for m in per_run],
                           "runs": [str(r) for r in run_dirs], "test": rows,
                           "best_epochs": [m["best_epoch"] for m in per_run]})
    return "\n".join(table), (md_path, json_path)
