"""Checks that keep a training run from producing a silently wrong result (docs/TRAINING.md "What stops a run").

* non-finite values: a NaN/inf training loss or similarity stops the run with one line naming the epoch and the
  clip(s) at fault (exit 2 through ``run_cli``); the new run's folder is removed, so no reader mistakes it for a
  run at all;
* every split the run will need (test and the dumped splits too) is loaded and validated before the first step;
* a resume must find the same run: the checkpoint's config hash equals the hash of the run's ``config.json`` and of
  the config now given, and the CPU thread count (it changes the bits) equals the one recorded in ``run.json``
  (``--threads`` defaults to it; another count is refused unless ``--force-threads``), and so must the number of
  processes under torchrun (recorded in the checkpoint; another one only with ``--force-world-size``).
"""
from __future__ import annotations

import contextlib
import math
import shutil
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import torch

from utils.errors import UserError
from utils.io import read_json, write_json

RUN_ENV = "run.json"  # threads / device / torch version of a run, written when the run folder is created


class NonFiniteError(UserError):
    """A NaN / inf appeared during training or evaluation."""


# ------------------------------------------------------------------------------------------------ non-finite values
def check_finite_loss(loss: float, epoch: int, batch_clip_ids: Sequence[str], batch_inputs=None) -> None:
    if math.isfinite(loss):
        return
    culprit = _nonfinite_clips(batch_inputs, batch_clip_ids) if batch_inputs is not None else []
    where = (f"non-finite input in clip(s) {', '.join(culprit[:3])}" if culprit else
             f"inputs finite; the model diverged (lower optimizer.args.lr?) on a batch starting with clip "
             f"{batch_clip_ids[0]!r}")
    raise NonFiniteError(f"training diverged: epoch {epoch}: loss is {loss} ({where}); no run folder kept")


def check_finite_sims(sims: np.ndarray, split: str, clip_ids: Sequence[str], captions_per_clip: int,
                      epoch: int | None = None) -> None:
    """Every similarity of a split must be finite (a NaN row would rank its clip arbitrarily)."""
    bad = ~np.isfinite(sims)
    if not bad.any():
        return
    rows, cols = np.nonzero(bad)
    when = f"epoch {epoch}: " if epoch is not None else ""
    raise NonFiniteError(
        f"{when}{split} similarities hold {bad.sum()} non-finite value(s) (first: caption {rows[0] % captions_per_clip} "
        f"of clip {clip_ids[rows[0] // captions_per_clip]!r} vs clip {clip_ids[cols[0]]!r}); check those clips' "
        "features and word vectors for NaN/inf; no run folder kept")


def _nonfinite_clips(batch_inputs, clip_ids: Sequence[str]) -> list[str]:
    experts, text = batch_inputs
    bad = torch.zeros(len(clip_ids), dtype=torch.bool)
    for tensor in list(experts.values()) + [text]:
        bad |= (~torch.isfinite(tensor.detach().float())).reshape(len(clip_ids), -1).any(dim=1).cpu()
    return [clip_ids[i] for i in torch.nonzero(bad).flatten().tolist()]


@contextlib.contextmanager
def discard_on_failure(run_dir: Path, new_run: bool, fresh_dirs: Sequence[Path] = ()) -> Iterator[None]:
    """A NEW run that stops on bad input (UserError) or an OS error leaves no folder behind (nor the experiment /
    save folders it created, when they are empty)."""
    try:
        yield
    except (UserError, OSError):
        if new_run:
            discard_run_dir(run_dir, fresh_dirs)
        raise


def discard_run_dir(run_dir: Path, fresh_dirs: Sequence[Path] = ()) -> None:
    """Remove a new run's folder, and the experiment / save folders it created when they are left empty."""
    shutil.rmtree(run_dir, ignore_errors=True)
    for d in fresh_dirs:
        with contextlib.suppress(OSError):
            d.rmdir()


# ------------------------------------------------------------------------------------------------ splits up front
def preflight_splits(config: dict, splits: Sequence[str],
                     loader: Callable[[dict, list[str]], dict], loader_reads_archive: bool = True) -> None:
    """Load and validate the evaluation-only splits now (then free them) so that a bad test clip fails before
    training, not after all epochs."""
    todo = [s for s in dict.fromkeys(splits) if s not in ("train", "val")]
    if loader_reads_archive:
        check_disjoint_splits(config)
    if todo:
        loader(config, todo)  # validates while loading; the tensors are freed at once (peak memory)


def check_qrels_files(config: dict, splits: Sequence[str]) -> None:
    """A data set's ``qrels-<split>.trec`` (if any) must judge exactly the split list's caption queries and clips:
    read now, it fails before training instead of after the last epoch (where the run's evaluation reads it)."""
    from data.clotho import CAPTIONS_PER_CLIP, read_split_list, root_feat_dir
    from data.synthetic import qrels_path
    from retrieval.qrels import load_qrels
    from retrieval.sims_io import query_id

    root = root_feat_dir(config)
    for split in splits:
        path = qrels_path(root, split)
        if not path.is_file():
            continue
        clip_ids = read_split_list(root / f"{split}_list.txt")
        try:
            load_qrels(path, query_ids=[query_id(c, k) for c in clip_ids for k in range(CAPTIONS_PER_CLIP)],
                       doc_ids=clip_ids)
        except UserError as err:
            raise UserError(f"{err} ({path.name} and {split}_list.txt disagree: the qrels must judge the split's "
                            "clips)") from None


def check_disjoint_splits(config: dict) -> None:
    """A clip in two splits (a train clip in test) would leak training data into the evaluation."""
    from data.clotho import SPLITS, ensure_data, read_split_list

    root = ensure_data(config)
    seen: dict[str, str] = {}
    for split in SPLITS:
        path = root / f"{split}_list.txt"
        if not path.is_file():
            continue  # the loader names a missing list
        for clip in read_split_list(path):
            if seen.setdefault(clip, split) != split:
                raise UserError(f"{path}: clip {clip!r} is also in {seen[clip]}_list.txt (splits must not overlap)")


# ------------------------------------------------------------------------------------------------ resume identity
def resume_threads(run_dir: Path, threads: int | None, force: bool) -> int | None:
    """The thread count a resume must use: the recorded one unless ``force`` (same bits is the promise)."""
    env_path = run_dir / RUN_ENV
    if not env_path.is_file():
        return threads
    recorded = read_json(env_path).get("threads")
    if not isinstance(recorded, int) or recorded < 1:
        raise UserError(f"{env_path}: threads: expected a positive integer, got {recorded!r}")
    if threads is None or threads == recorded:
        return recorded
    if force:
        return threads
    raise UserError(f"--resume {run_dir}: --threads {threads} differs from the run's {recorded} ({env_path}); the "
                    "thread count changes the numbers. Drop --threads, or add --force-threads to accept different bits")


def check_world_size(run_dir: Path, ckpt: dict, processes: int, force: bool) -> None:
    """A resume runs with the process count that wrote the checkpoint (1 without torchrun), unless ``force``: the
    count changes the bits (the global batch's sums are reduced in another order). A 2-process run resumed by 1 or 3
    processes ended with other numbers (bf16 train loss 7e-6 / 2e-5 relative) without a word."""
    recorded = ckpt.get("processes")
    if recorded is None or force or recorded == processes:  # None: a checkpoint written before the count was kept
        return
    raise UserError(f"--resume {run_dir}: the run was trained by {_processes(recorded)}, this resume runs "
                    f"{_processes(processes)}; the process count changes the numbers. Resume with "
                    f"{resume_command(run_dir, recorded)}, or add --force-world-size to accept different bits")


def resume_command(run_dir: Path, processes: int) -> str:
    """How to continue ``run_dir`` with the process count it was trained with."""
    if processes == 1:
        return f"python train.py --resume {run_dir}"
    return f"torchrun --nproc_per_node {processes} train.py --resume {run_dir} ({processes} processes in all)"


def _processes(n) -> str:
    return "1 process" if n == 1 else f"{n} processes"


def check_checkpoint_identity(run_dir: Path, ckpt: dict, chash: str) -> None:
    saved = ckpt.get("config_hash")
    if saved != chash:
        raise UserError(f"--resume {run_dir}: the checkpoint was written with config {saved}, but config.json / the "
                        f"config given hash to {chash} (config.json edited after the run started?); start a new run")


def write_run_env(run_dir: Path, device: torch.device, config_path=None, processes: int = 1) -> None:
    """``run.json``: what changes the bits (``processes``: the torchrun world size), and the config file the run was
    trained from (``--config`` readers pick only runs of their own file: two configs can share an experiment folder
    name)."""
    env = {"threads": torch.get_num_threads(), "device": str(device), "torch": torch.__version__,
           "processes": processes}
    if config_path is not None:
        env["config_file"] = str(Path(config_path).resolve())
    write_json(run_dir / RUN_ENV, env)
