"""Complete-or-refuse output sets: a reader sees the complete old set, the complete new set, or a clear refusal.

Writers (fusion.py, qpp.py, qpp.py --reproduce-fork) build their whole output folder through :func:`output_set`:

1. the files go into a fresh hidden sibling ``.<name>.tmp-<pid>-<rand>/``;
2. on success a completion record ``complete.json`` (every file with its size and sha256) is written there;
3. the old folder is renamed aside (``.<name>.old-<pid>-<rand>``), the new one renamed into place, the old one
   deleted (sub-folders named in ``keep``, e.g. a cache or another stage's nested output, are carried over).

A kill at any point leaves either the old folder or the new one in place, never a mix; between the two renames the
folder is briefly absent and :func:`recover` (run by the next writer or reader) puts the old one back. Leftover
temporaries of killed writers are removed by :func:`recover`.

Readers call :func:`require_complete` (a folder and the files they will use) or :func:`verify_recorded_file` (one
file a user named): the record must exist and each used file must still have its recorded size (and sha256 for
files up to :data:`HASH_VERIFY_LIMIT`). A training run folder gets the same record from trainer/ (its
``metrics.json``, written last, stays the completion marker).
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import os
import shutil
import uuid
from pathlib import Path
from typing import Iterable, Iterator

from utils.errors import UserError
from utils.io import pid_alive, read_json, stale_temp_owner, write_json
from utils.testhooks import pause

RECORD = "complete.json"
HASH_VERIFY_LIMIT = 256 * 2**20  # readers re-hash files up to this size; larger ones are checked by size


# ------------------------------------------------------------------------------------------------ writing
@contextlib.contextmanager
def output_set(out: str | os.PathLike, *, writer: str, keep: Iterable[str] = ()) -> Iterator[Path]:
    """Yield a fresh temporary folder; on success record its files and swap it in place of ``out``."""
    out = Path(out)
    keep = tuple(keep)
    recover(out, keep)
    check_target(out, keep, writer=writer)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        yield tmp
        pause("output-build")  # crash tests: the new set is written but not recorded
        write_record(tmp, writer, exclude=keep)
        _swap(tmp, out, keep)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def check_target(out: Path, keep: Iterable[str] = (), *, writer: str) -> None:
    """``out`` must be absent, or a folder holding a previous output set of ``writer`` (or only ``keep`` entries).

    A set recorded by another writer is another stage's output, or a training run folder (``train.py`` records
    one too): refused, never replaced."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: exists and is not a folder (name an output folder)")
    if not out.is_dir():
        return
    if not (out / RECORD).is_file():
        foreign = sorted(p.name for p in out.iterdir()  # temporaries of nested writers (qpp/.fork.tmp-*) are ours
                         if p.name not in set(keep) and stale_temp_owner(p.name) is None)
        if foreign:
            raise UserError(f"{out}: exists and is not a complete output folder of this toolkit (no {RECORD}; holds "
                            f"{foreign[0]!r}); name a new or empty folder, or delete it")
        return
    try:
        previous = read_json(out / RECORD).get("writer")
    except (UserError, AttributeError):  # not JSON, not an object
        raise UserError(f"{out}: exists and is not a complete output folder of this toolkit (unreadable {RECORD}); "
                        "name a new or empty folder, or delete it") from None
    if previous != writer:
        raise UserError(f"{out}: holds the output of {previous}, not of {writer} (its {RECORD}); name a new folder "
                        "or a previous output folder of this command")


def write_record(folder: str | os.PathLike, writer: str, exclude: Iterable[str] = (),
                 files: Iterable[str] | None = None) -> dict:
    """Write ``<folder>/complete.json`` listing ``files`` (default: every file under ``folder``) with sha256."""
    folder = Path(folder)
    exclude = set(exclude) | {RECORD}
    if files is None:
        rels = sorted(str(p.relative_to(folder)) for p in folder.rglob("*")
                      if p.is_file() and p.relative_to(folder).parts[0] not in exclude
                      and stale_temp_owner(p.name) is None)
    else:
        rels = list(files)
    entries = {rel: {"bytes": (folder / rel).stat().st_size, "sha256": sha256_file(folder / rel)} for rel in rels}
    record = {"format": "complete-output-set/1", "writer": writer,
              "finished": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), "files": entries}
    write_json(folder / RECORD, record)
    return record


def _swap(tmp: Path, out: Path, keep: tuple[str, ...]) -> None:
    old = None
    if out.exists():
        old = out.parent / f".{out.name}.old-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        os.rename(out, old)
        pause("output-swap")  # crash tests: between the two renames, the folder is briefly absent
    os.rename(tmp, out)
    if old is not None:
        _carry_over(old, out, keep)
        shutil.rmtree(old, ignore_errors=True)


def _carry_over(old: Path, new: Path, keep: Iterable[str]) -> None:
    for name in keep:
        if (old / name).exists() and not (new / name).exists():
            os.rename(old / name, new / name)


def recover(out: str | os.PathLike, keep: Iterable[str] = ()) -> None:
    """Finish or undo the swap of a killed writer of ``out`` and remove its temporaries."""
    out = Path(out)
    parent = out.parent
    if not parent.is_dir():
        return
    for entry in sorted(parent.glob(f".{out.name}.old-*")) + sorted(parent.glob(f".{out.name}.tmp-*")):
        owner = stale_temp_owner(entry.name)
        if owner is None or pid_alive(owner):
            continue
        if ".old-" in entry.name:
            if not out.exists():
                os.rename(entry, out)  # killed between the two renames: the old set is the complete one
                continue
            _carry_over(entry, out, keep)
        shutil.rmtree(entry, ignore_errors=True)


# ------------------------------------------------------------------------------------------------ reading
def require_complete(folder: str | os.PathLike, files: Iterable[str] = (), *, rerun: str = "") -> dict:
    """The completion record of ``folder`` after checking the ``files`` a reader will use; ``UserError`` if not."""
    folder = Path(folder)
    recover(folder)
    hint = f"; re-run {rerun}" if rerun else ""
    if not folder.is_dir():
        raise UserError(f"{folder}: output folder not found{hint}")
    record_path = folder / RECORD
    if not record_path.is_file():
        pending = any(pid_alive(stale_temp_owner(p.name) or 0) for p in folder.parent.glob(f".{folder.name}.tmp-*"))
        state = "still being written by another process" if pending else "its writer was interrupted or is older"
        raise UserError(f"{folder}: incomplete output set (no {RECORD}: {state}){hint}")
    record = read_json(record_path)
    if not isinstance(record, dict) or not isinstance(record.get("files"), dict):
        raise UserError(f"{record_path}: not a completion record{hint}")
    for rel in files:
        _verify(folder, rel, record, hint)
    return record


def verify_recorded_file(path: str | os.PathLike, *, rerun: str = "") -> None:
    """A file a user named directly: if it belongs to an output set, that set must be complete and the file intact.

    Files in a writer's temporary folder are refused; files in folders without a record are the user's own.
    """
    path = Path(path)
    hint = f"; re-run {rerun}" if rerun else ""
    for parent in path.parents:
        if stale_temp_owner(parent.name) is not None:
            raise UserError(f"{path}: inside the temporary folder {parent} of an unfinished writer{hint}")
    for parent in path.parents:  # the nearest folder with a record decides (e.g. run/qpp/ or run/)
        if (parent / RECORD).is_file():
            record = read_json(parent / RECORD)
            rel = str(path.resolve().relative_to(parent.resolve()))
            if isinstance(record, dict) and rel in record.get("files", {}):
                _verify(parent, rel, record, hint)
            return


def _verify(folder: Path, rel: str, record: dict, hint: str) -> None:
    entry = record["files"].get(rel)
    path = folder / rel
    if entry is None:
        raise UserError(f"{path}: not part of the completed output set in {folder / RECORD}{hint}")
    if not path.is_file():
        raise UserError(f"{path}: missing although {folder / RECORD} lists it{hint}")
    size = path.stat().st_size
    if size != entry.get("bytes"):
        raise UserError(f"{path}: changed since its output set was completed ({size} bytes, {RECORD} says "
                        f"{entry.get('bytes')}){hint}")
    if size <= HASH_VERIFY_LIMIT and sha256_file(path) != entry.get("sha256"):
        raise UserError(f"{path}: changed since its output set was completed (sha256 differs from {RECORD}){hint}")


def sha256_file(path: str | os.PathLike, chunk: int = 8 * 2**20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


# ------------------------------------------------------------------------------------------------ training run folders
RUN_MODEL = "trained_model.pth"


def run_record_files(run_dir: str | os.PathLike) -> list[str]:
    """What a training run's ``complete.json`` lists: its ``.json`` / ``.npy`` files (config, run.json, sims/*) and
    the checkpoint; never the markers, hidden temporaries, or the nested output sets of later stages (fusion/, qpp/)."""
    from utils.paths import COMPLETE_MARKER

    run_dir = Path(run_dir)
    candidates = list(run_dir.iterdir()) + list((run_dir / "sims").glob("*"))
    rels = sorted(p.relative_to(run_dir).as_posix() for p in candidates
                  if p.is_file() and p.name[0] != "." and p.suffix in (".json", ".npy")
                  and p.name not in (COMPLETE_MARKER, RECORD))
    return rels + ([RUN_MODEL] if (run_dir / RUN_MODEL).is_file() else [])


def write_run_record(run_dir: str | os.PathLike, writer: str) -> dict:
    """``<run>/complete.json`` for a training run folder (train.py writes it just before ``metrics.json``)."""
    return write_record(run_dir, writer, files=run_record_files(run_dir))


def require_complete_run(run_dir: str | os.PathLike, files: Iterable[str] = ()) -> dict:
    """A training run folder a reader is about to use: finished (``metrics.json``), with its completion record
    ``complete.json``, and the ``files`` it will read still as recorded. ``UserError`` naming the folder otherwise.

    Every reader of run folders goes through here (fusion.py --run / --config / --runs and qpp.py via
    ``retrieval.sims_io.load_sims``, search.py via ``model.query.load_run_model``)."""
    from utils.paths import COMPLETE_MARKER

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"{run_dir}: run folder not found")
    if not any((run_dir / name).exists() for name in ("config.json", COMPLETE_MARKER, "sims")):
        raise UserError(f"{run_dir}: not a run folder (no config.json, metrics.json or sims/; a run folder is "
                        "data/saved/<experiment>/<run-id>, as train.py prints)")
    if not (run_dir / COMPLETE_MARKER).is_file():
        raise UserError(f"{run_dir}: incomplete run (no {COMPLETE_MARKER}: training was killed or is still running; "
                        f"finish it with train.py --resume {run_dir})")
    if not (run_dir / RECORD).is_file():
        raise UserError(f"{run_dir}: run has {COMPLETE_MARKER} but no {RECORD} (the sizes and sha256 of its files, "
                        "written by train.py before metrics.json), so a changed or copied-over matrix could not be "
                        "detected: re-train it, or, for a run made before complete.json existed, check it and record "
                        f"it with: python scripts/record_run.py {run_dir}")
    return require_complete(run_dir, files, rerun="train.py")
