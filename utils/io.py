"""Atomic file writes: every artefact is written to a temporary name, then renamed.

A reader therefore never sees a half-written file. Temporaries are named ``.<name>.<pid>-<random>.tmp<suffix>``:
a write that fails removes its temporary at once, and the temporary of a KILLED writer (its pid no longer alive)
is removed by :func:`sweep_stale_temps`, which every stage calls on its output folder at start. Files get the
usual ``0666 & ~umask`` mode (``mkstemp`` alone would force 0600).
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from utils.errors import UserError


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}-", suffix=".tmp" + path.suffix, dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~current_umask())
    finally:
        os.close(fd)
    tmp = Path(tmp)
    try:
        try:
            yield tmp
        except OSError as err:  # write() errors (a full disk) carry no file name: name the file being written
            if err.filename is None and err.errno is not None:
                raise OSError(err.errno, err.strerror, str(path)) from None
            raise
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_TEMP_RE = re.compile(r"^\..+\.(\d+)-[^.]+\.tmp")          # .<name>.<pid>-<rand>.tmp...   (atomic_path)
_TEMP_DIR_RE = re.compile(r"^\..+\.(?:tmp|old)-(\d+)-")      # .<name>.tmp-<pid>-<rand>      (utils.outputs, data.synthetic)


def pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stale_temp_owner(name: str) -> int | None:
    """The writer pid encoded in a temporary's name, or ``None`` if ``name`` is not one of our temporaries."""
    m = _TEMP_RE.match(name) or _TEMP_DIR_RE.match(name)
    return int(m.group(1)) if m else None


def sweep_stale_temps(folder: str | os.PathLike, depth: int = 1) -> list[Path]:
    """Remove the temporaries of writers that were killed (pid gone) under ``folder`` (``depth`` levels).

    Temporary folders ``.x.old-<pid>-*`` are left to :func:`utils.outputs.recover` (they may hold the only copy of
    an output set). Returns what was removed.
    """
    import shutil

    folder = Path(folder)
    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    try:
        entries = list(folder.iterdir())
    except OSError:
        return removed
    for entry in entries:
        owner = stale_temp_owner(entry.name)
        if owner is not None and ".old-" not in entry.name and not pid_alive(owner):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
            removed.append(entry)
        elif depth > 1 and entry.is_dir() and not entry.is_symlink() and owner is None:
            removed += sweep_stale_temps(entry, depth - 1)
    return removed


def file_stamp(path: str | os.PathLike) -> list[int]:
    """What a cache keyed on a file compares to tell that the file changed: size, mtime, ctime, inode (ns).

    ctime and the inode catch a rewrite that keeps size and mtime (``touch -d`` after editing, ``cp`` over it,
    a swap of two files): the kernel updates ctime on every write and no tool can set it. Raises OSError.
    """
    st = os.stat(path)
    return [int(st.st_size), int(st.st_mtime_ns), int(st.st_ctime_ns), int(st.st_ino)]


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Strict JSON: NaN / inf (an undefined metric) are written as ``null``."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(_finite(obj), indent=2, default=_json_default, allow_nan=False) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: file not found")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise UserError(f"{path}: invalid JSON ({err.msg} at line {err.lineno})") from None
    except UnicodeDecodeError:
        raise UserError(f"{path}: not a UTF-8 text file") from None


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def save_npy(path: str | os.PathLike, array: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, array)


def _finite(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if np.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    if isinstance(obj, np.floating):
        return _finite(float(obj))
    if isinstance(obj, np.ndarray):
        return _finite(obj.tolist())
    return obj


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
