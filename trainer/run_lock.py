"""One writer per run folder: ``<run>/.train.lock``, an ``flock`` held by the process that trains into the folder.

Two processes training into one folder (two ``train.py --resume RUN`` at once) would interleave their checkpoints,
sims and metrics without any error. The writing process (rank 0 under torchrun) holds an exclusive ``flock`` on
``.train.lock`` from the moment it takes the folder (a new run: right after creating it; a resume: before anything
is read or swept) until the end of the final evaluation; a second writer is refused with one line naming the folder
and the holder's pid. The kernel drops the lock when its holder dies, however it dies, so a killed run never blocks
its own resume. The file is removed on release: a finished run holds exactly the files it held before the lock
existed (it is hidden, so readers of run folders never list it; a killed run's stale one is taken over).
"""
from __future__ import annotations

import fcntl
import os
import socket
from pathlib import Path

from utils.errors import UserError

LOCK_NAME = ".train.lock"


class RunFolderLock:
    """The run-folder lock of this process; :meth:`release` is safe to call when nothing is held."""

    def __init__(self) -> None:
        self._fd: int | None = None
        self._path: Path | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self, run_dir: str | os.PathLike) -> None:
        """Take ``run_dir``'s lock, or raise ``UserError`` naming the folder and the process that holds it."""
        path = Path(run_dir) / LOCK_NAME
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 200).decode("utf-8", "replace").strip() or "a process that is starting"
                os.close(fd)
                raise UserError(f"{run_dir}: being trained by another process ({holder}); a second train.py writing "
                                "the same run folder would mix the two runs' checkpoints and results: wait for it to "
                                "end, or stop it first") from None
            except BaseException:
                os.close(fd)
                raise
            if _same_file(fd, path):
                break
            os.close(fd)  # the previous holder removed the file between our open and our lock: take the new one
        self._fd, self._path = fd, path  # held from here: release() closes it even if the writes below fail
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode())  # ENOSPC on a full disk

    def release(self) -> None:
        """Remove the lock file, then drop the lock (removing first: nobody can lock the old file in between)."""
        if self._fd is None:
            return
        try:
            if self._path is not None and _same_file(self._fd, self._path):
                self._path.unlink(missing_ok=True)  # the folder may be gone already (a discarded new run)
        finally:
            os.close(self._fd)
            self._fd, self._path = None, None


def _same_file(fd: int, path: Path) -> bool:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (mine.st_dev, mine.st_ino)
