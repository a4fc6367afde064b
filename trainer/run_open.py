"""Opening a training run: the config's and a resume's checks, and the data a run trains on (trainer/trainer.py).

Everything here runs before the first epoch and writes nothing except through the run-folder lock, so bad input
fails before a run folder exists (a new run) or before a resumed one changes.
"""
from __future__ import annotations

from pathlib import Path

from trainer.checkpoint import LAST_NAME, load_checkpoint
from trainer.distributed import current_context
from trainer.export import TensorSplit, as_tensor_split
from trainer.guards import (check_checkpoint_identity, check_disjoint_splits, check_qrels_files, check_world_size,
                            preflight_splits, resume_threads)
from trainer.precision import check_supported, holds_eval_splits, precision_of, store_features
from trainer.run_lock import RunFolderLock
from trainer.runtime import configure_torch
from utils.config import config_hash, first_difference
from utils.config_rules import check_values
from utils.errors import UserError
from utils.io import read_json, sweep_stale_temps
from utils.paths import COMPLETE_MARKER


def load_splits(config: dict, splits: list[str]) -> dict[str, TensorSplit]:
    from data.clotho import load_clotho  # imported late: keeps model/optimizer tests free of data deps
    data = load_clotho(config, splits)
    return {name: as_tensor_split(sd) for name, sd in data.items()}


def open_run(config, config_path, resume, lock: RunFolderLock, device, threads, force: tuple[bool, bool]):
    """The checks of a run's config and, for a resume, of its folder and checkpoint (rank 0 takes the folder's
    lock first); also sets torch's threads. Returns the config hash, the run folder (None for a new run) and the
    checkpoint (None for a new run)."""
    ddp = current_context()
    check_values(config, "config")  # also a run's config.json read back for --resume
    if resume is not None:
        if ddp.is_writer:
            if Path(resume).is_dir() and not (Path(resume) / COMPLETE_MARKER).is_file():  # else refused below
                lock.acquire(resume)  # before anything of the folder is read, swept or written
            sweep_stale_temps(resume, depth=2)  # temporaries of the killed process (a checkpoint write: up to 300 MB)
        threads = resume_threads(Path(resume), threads, force[0])
    configure_torch(device, threads)
    trainer_cfg = config["trainer"]
    if int(trainer_cfg["epochs"]) < 1:
        raise UserError("config: trainer.epochs must be >= 1")
    chash = config_hash(config)
    check_supported(precision_of(config), device)
    for s in trainer_cfg.get("dump_splits", ["val", "test"]):
        if s not in ("train", "val", "test"):
            raise UserError(f"config: trainer.dump_splits: unknown split {s!r}")
    if resume is None:
        if config_path is None:
            raise UserError("fit: config_path is required for a new run")
        return chash, None, None
    run_dir = Path(resume)
    check_resumable(run_dir, config, chash)
    ckpt = load_checkpoint(run_dir / LAST_NAME)
    check_checkpoint_identity(run_dir, ckpt, chash)
    check_world_size(run_dir, ckpt, ddp.world_size, force[1])
    check_same_data(run_dir, ckpt, config)
    for stale in run_dir.rglob(".*.tmp*"):  # temporaries of writes interrupted by the kill
        if ddp.is_writer:
            stale.unlink(missing_ok=True)
    return chash, run_dir, ckpt


def load_data(config: dict, data: dict[str, TensorSplit] | None, splits_loader, dump_splits: list[str]
               ) -> dict[str, TensorSplit]:
    """Train and val (and, when held, the evaluation splits), after every split the run needs was validated."""
    ddp = current_context()
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
    reads_archive = data is None and splits_loader is None
    data = dict(data) if data is not None else loader(config, ["train", "val"])
    missing = [s for s in ("train", "val") if s not in data]
    if missing:
        raise UserError(f"data: split(s) {missing} not loaded")
    if data["train"].n < 2:
        raise UserError("data: the train split needs at least 2 clips")
    if hold:
        data["train"] = store_features(data["train"], precision_of(config))  # the float32 copy is freed here
        data.update(loader(config, [s for s in dict.fromkeys(needed) if s not in data]))
    if reads_archive:  # once the split lists are validated, before any epoch (the final evaluation reads them)
        check_qrels_files(config, ("val", "test"))
    return data


def archive_sizes(config: dict) -> dict:
    """What ranks compare of the archive they read (sizes: a copy on another node keeps them, not its mtimes)."""
    from data.clotho import archive_stamp

    return {rel: None if stamp is None else stamp[0] for rel, stamp in archive_stamp(config).items()}


def check_same_data(run_dir: Path, ckpt: dict, config: dict) -> None:
    """A resume continues on the data the run started with: an archive file changed since then is refused (the
    config hash cannot see it; a run resumed on other data reported numbers of neither)."""
    from data.clotho import archive_stamp

    saved = ckpt.get("data_stamp")
    if not isinstance(saved, dict):
        return  # a checkpoint written before the stamp existed
    now = archive_stamp(config)
    changed = [rel for rel in saved if saved[rel] != now.get(rel)]
    if changed:
        raise UserError(f"--resume {run_dir}: {changed[0]} changed since the run started (size or mtime; "
                        f"{len(changed)} archive file(s) differ): resuming would continue on other data; restore "
                        "the archive or start a new run")


def check_resumable(run_dir: Path, config: dict, chash: str) -> None:
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
