"""Housekeeping: file modes follow the umask, killed writers' temporaries are swept, run folders are unique under a
race, "newest complete run" means newest completed, output sets swap atomically and recover after a kill."""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from utils.errors import UserError
from utils.io import atomic_path, sweep_stale_temps, write_json
from utils.outputs import RECORD, output_set, recover, require_complete
from utils.paths import complete_runs, make_run_dir, newest_complete_run


@pytest.mark.parametrize("mask", [0o022, 0o002, 0o077])
def test_files_follow_the_umask(tmp_path, mask):
    old = os.umask(mask)
    try:
        write_json(tmp_path / "a.json", {"x": 1})
    finally:
        os.umask(old)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o666 & ~mask


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_temporaries_of_killed_writers_are_swept(tmp_path):
    dead = _dead_pid()
    stale = tmp_path / f".checkpoint-last.pth.{dead}-abc123.tmp.pth"
    stale.write_bytes(b"x" * 100)
    live = tmp_path / f".metrics.json.{os.getpid()}-abc123.tmp.json"
    live.write_text("{}")
    stale_dir = tmp_path / f".fusion.tmp-{dead}-abcd"
    stale_dir.mkdir()
    mine = tmp_path / "notes.tmp"
    mine.write_text("user file")
    removed = sweep_stale_temps(tmp_path)
    assert set(removed) == {stale, stale_dir} and live.exists() and mine.exists()


def test_run_dirs_unique_when_started_in_the_same_second(tmp_path):
    made, barrier = [], threading.Barrier(8)

    def start():
        barrier.wait()
        made.append(make_run_dir(tmp_path, "exp", 0))

    threads = [threading.Thread(target=start) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(made)) == 8 and all(p.is_dir() for p in made)


def test_newest_complete_run_is_the_last_completed(tmp_path):
    a = make_run_dir(tmp_path, "exp", 0)
    b = make_run_dir(tmp_path, "exp", 0)  # same second: b's id sorts BEFORE a's ("-01" < "_seed")
    write_json(a / "metrics.json", {})
    time.sleep(0.01)
    write_json(b / "metrics.json", {})
    assert complete_runs(tmp_path, "exp") == [a, b] and newest_complete_run(tmp_path, "exp") == b


def test_output_set_swaps_and_refuses_foreign_folders(tmp_path):
    out = tmp_path / "fusion"
    with output_set(out, writer="t") as tmp:
        (tmp / "a.npy").write_bytes(b"1")
    assert require_complete(out, ["a.npy"])["files"]["a.npy"]["bytes"] == 1
    with pytest.raises(RuntimeError):
        with output_set(out, writer="t") as tmp:
            (tmp / "a.npy").write_bytes(b"22")
            raise RuntimeError("killed")
    assert (out / "a.npy").read_bytes() == b"1" and not list(tmp_path.glob(".fusion.*"))
    (out / "a.npy").write_bytes(b"3")
    with pytest.raises(UserError, match="changed since"):
        require_complete(out, ["a.npy"])
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "x").write_text("keep")
    with pytest.raises(UserError, match="not a complete output folder"):
        with output_set(foreign, writer="t"):
            pass
    assert (foreign / "x").read_text() == "keep"


def test_output_set_replaces_only_a_set_of_its_own_writer(tmp_path):
    """A folder recorded by another writer (a training run, qpp.py's output) is another stage's: refused, kept."""
    out = tmp_path / "out"
    with output_set(out, writer="qpp.py") as tmp:
        (tmp / "weights.npy").write_bytes(b"w")
    with pytest.raises(UserError, match=r"holds the output of qpp\.py, not of fusion\.py"):
        with output_set(out, writer="fusion.py") as tmp:
            (tmp / "combsum.npy").write_bytes(b"c")
    assert (out / "weights.npy").read_bytes() == b"w" and not (out / "combsum.npy").exists()
    (out / RECORD).write_text("not json")
    with pytest.raises(UserError, match="not a complete output folder"):
        with output_set(out, writer="qpp.py"):
            pass
    assert (out / "weights.npy").read_bytes() == b"w"


def test_recover_after_a_kill_between_the_renames(tmp_path):
    out = tmp_path / "qpp"
    with output_set(out, writer="t", keep=("cache",)) as tmp:
        (tmp / "w.npy").write_bytes(b"old")
    (out / "cache").mkdir()
    (out / "cache" / "c.npy").write_bytes(b"c")
    old = tmp_path / f".qpp.old-{_dead_pid()}-abcd"
    os.rename(out, old)  # the state a kill between the two renames leaves
    with pytest.raises(UserError, match="output folder not found"):
        require_complete(tmp_path / "other")
    recover(out)
    assert (out / "w.npy").read_bytes() == b"old" and (out / RECORD).is_file() and not old.exists()
    with output_set(out, writer="t", keep=("cache",)) as tmp:
        (tmp / "w.npy").write_bytes(b"new")
    assert (out / "w.npy").read_bytes() == b"new" and (out / "cache" / "c.npy").read_bytes() == b"c"


def test_atomic_write_error_names_the_file(tmp_path):
    target = tmp_path / "x.bin"
    with pytest.raises(OSError) as info:
        with atomic_path(target):
            raise OSError(28, "No space left on device")
    assert info.value.filename == str(target) and not list(tmp_path.iterdir())


def test_the_error_line_is_written_at_once(monkeypatch):
    """Under torchrun every rank prints its error line to one terminal; ``print`` wrote the text and the newline in
    two writes, so two ranks' lines came out glued (``...same dataerror: distributed: ...``)."""
    from utils.errors import run_cli

    writes = []

    class Recorder:
        def write(self, text):
            writes.append(text)

        def flush(self):
            pass

    def main(argv):
        raise UserError("config.json: bad")

    monkeypatch.setattr(sys, "stderr", Recorder())
    assert run_cli(main, []) == 2
    assert writes == ["error: config.json: bad\n"]
