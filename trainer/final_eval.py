"""The end of a run: the best weights evaluated on every evaluation split, and the run folder's results written.

Writes ``trained_model.pth``, the dumped sims (``sims/<split>.npy`` + manifest), ``curves.png``, the record of
what readers use, and ``metrics.json`` last: its presence marks a complete run (docs/FORMATS.md).
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from model.build import count_parameters
from retrieval.metrics import both_directions, clip_major_gt_cols
from retrieval.sims_io import build_manifest, save_sims
from trainer.checkpoint import FINAL_NAME, LAST_NAME, save_checkpoint
from trainer.distributed import current_context
from trainer.export import TensorSplit, compute_sims
from trainer.guards import check_finite_sims
from trainer.precision import describe, precision_of
from trainer.run_log import format_metrics
from utils.io import write_json
from utils.paths import COMPLETE_MARKER


def multi_relevance(config: dict, split: str, sims: np.ndarray, clip_ids, k: int) -> dict | None:
    """Metrics against the data set's multi-relevance qrels (``qrels-<split>.trec``, docs/METRICS.md), if any."""
    from data.clotho import root_feat_dir
    from data.synthetic import qrels_path
    from retrieval.qrels_metrics import qrels_file_metrics

    return qrels_file_metrics(sims, qrels_path(root_feat_dir(config), split), clip_ids, k)


def evaluate_and_write(model: torch.nn.Module, best_state: dict, *, config: dict, chash: str, run_dir: Path,
                       device: torch.device, seed: int, best_epoch: int, history: list[dict],
                       data: dict[str, TensorSplit], eval_splits: list[str], dump_splits: list[str],
                       splits_loader: Callable[[dict, list[str]], dict[str, TensorSplit]], timings: dict,
                       logger: logging.Logger, t_start: float) -> None:
    """Load ``best_state`` into ``model``, evaluate it in eval mode on ``eval_splits`` and write the results.

    ``data`` holds the splits already in memory; the others are loaded here (after training, for peak memory).
    """
    trainer_cfg = config["trainer"]
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
    todo = [s for s in eval_splits if s not in data]
    if todo:
        t0 = time.perf_counter()
        data.update(splits_loader(config, todo))
        timings["data_load_s"] += time.perf_counter() - t0
    results: dict[str, Any] = {}
    multi_relevance_results: dict[str, Any] = {}
    eval_times = {}
    for split in eval_splits:
        t_ev = time.perf_counter()
        ts = data[split]
        sims = compute_sims(model, ts, eval_device)  # float32 in every mode: the dumped sims are what search.py scores
        K = ts.captions_per_clip
        check_finite_sims(sims, split, ts.clip_ids, K)
        results[split] = both_directions(sims, clip_major_gt_cols(ts.n, K))
        multi = multi_relevance(config, split, sims, ts.clip_ids, K)  # extra judgements, when the data has them
        if multi is not None:
            multi_relevance_results[split] = multi
            t2a = multi["t2a"]
            logger.info(f"{split} multi-relevance t2a {format_metrics(t2a)} mAP10 {t2a['mAP10']:.2f} "
                        f"mAP16 {t2a['mAP16']:.2f} nDCG10 {t2a['nDCG10']:.2f} ({multi['file']})")
        if split in dump_splits:
            save_sims(run_dir / "sims", split, sims,
                      build_manifest(split, ts.clip_ids, ts.captions, source, captions_per_clip=K))
        eval_times[split] = time.perf_counter() - t_ev
        logger.info(f"{split} ({K} captions/clip, {K * ts.n} x {ts.n}) t2a {format_metrics(results[split]['t2a'])}")
        logger.info(f"{split} a2t {format_metrics(results[split]['a2t'])}")
    timings["eval_s"] = eval_times
    timings["total_s"] = time.perf_counter() - t_start
    metrics = {
        "params": count_parameters(model),
        "best_epoch": best_epoch,
        "val": best_val,
        "test": results["test"],
        "seed": seed,
        "config_hash": chash,
        "epochs": int(trainer_cfg["epochs"]),
        "device": str(device),
        "threads": torch.get_num_threads(),
        # what decides the bits: precision, device, threads, kernels, and the torchrun world size
        "numerics": {**describe(precision_of(config), device), "processes": current_context().world_size},
        "val_all_captions": results.get("val"),
        "train_all_captions": results.get("train"),
        "history": history,
        "timings": timings,
    }
    if multi_relevance_results:
        metrics["multi_relevance"] = multi_relevance_results  # {split: {"t2a", "a2t", "file", "graded"}}
    from trainer.curves import write_run_curves  # curves.png (+ TensorBoard events) from the per-epoch history
    write_run_curves(run_dir, history, best_epoch, tensorboard=bool(trainer_cfg.get("tensorboard", False)))
    from utils.outputs import write_run_record  # sizes + sha256 of what readers use; metrics.json: the marker
    write_run_record(run_dir, "train.py")
    write_json(run_dir / COMPLETE_MARKER, metrics)
    (run_dir / LAST_NAME).unlink(missing_ok=True)  # run complete: nothing left to resume
    logger.info(f"done: best epoch {best_epoch}, test t2a R1 {results['test']['t2a']['R1']:.2f} "
                f"R10 {results['test']['t2a']['R10']:.2f}; {run_dir}")
