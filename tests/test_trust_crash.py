"""Crash tests: REAL ``SIGKILL`` of subprocesses of train.py, fusion.py, qpp.py and data.synthetic at chosen points
(``TOOLKIT_TEST_PAUSE``, utils/testhooks.py), then every reader must see the complete old state, the complete new
state, or refuse with a clear message."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from utils.errors import UserError, run_cli
from utils.outputs import require_complete, sha256_file

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "configs" / "clotho-synthetic" / "tiny-ce.json"


def kill_at(argv: list, point: str, cwd: Path = REPO, timeout: float = 240.0) -> None:
    """Start ``python argv...`` with the pause point set, wait until it is there, SIGKILL it."""
    env = dict(os.environ, TOOLKIT_TEST_PAUSE=point, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, *map(str, argv)], cwd=cwd, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + timeout
    seen = []
    try:
        for line in proc.stderr:
            seen.append(line)
            if line.startswith(f"PAUSED {point.split('#')[0]}"):
                break
            if time.time() > deadline:
                break
        else:
            pytest.fail(f"process ended before {point}: rc={proc.wait()} {''.join(seen)[-2000:]}")
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL, "".join(seen)[-2000:]


def _train(argv):
    import train
    return train.main([str(a) for a in argv])


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_data_dir):
    root = tmp_path_factory.mktemp("crash")
    custom = (f"data_loader.args.data_dir={tiny_data_dir},data_loader.args.synthetic.enabled=false,"
              f"trainer.save_dir={root / 'saved'},trainer.epochs=3,data_loader.args.batch_size=32,arch.args.use_ce=")
    return {"root": root, "custom": custom}


def _exp(setup) -> Path:
    return setup["root"] / "saved" / "clotho-synthetic-tiny-ce"


def _runs(setup) -> set[Path]:
    return set(_exp(setup).iterdir()) if _exp(setup).is_dir() else set()


def test_train_killed_mid_epoch_and_mid_checkpoint_write(setup):
    from utils.paths import complete_runs, newest_complete_run

    argv = [REPO / "train.py", "--config", TINY, "--custom_args", setup["custom"], "--threads", "1", "--quiet"]
    assert run_cli(_train, argv[1:]) == 0  # the uninterrupted reference (same thread count)
    reference = newest_complete_run(setup["root"] / "saved", "clotho-synthetic-tiny-ce")

    # 1) killed inside the FIRST checkpoint write: only its temporary exists; nothing to resume from
    before = _runs(setup)
    kill_at(argv, "checkpoint-write")
    (first,) = _runs(setup) - before
    assert list(first.glob(".checkpoint-last.pth.*.tmp*")) and not (first / "checkpoint-last.pth").exists()
    assert newest_complete_run(setup["root"] / "saved", "clotho-synthetic-tiny-ce") == reference  # ignored
    with pytest.raises(UserError, match="no checkpoint-last.pth"):
        _train(["--resume", first])
    assert not list(first.glob(".*.tmp*"))  # the next start removed the killed writer's temporary

    # 2) killed mid-epoch 2 and 3) inside the SECOND checkpoint write: resume ends bit-identical to the reference
    for point in ("train-step@2", "checkpoint-write#2"):
        before = _runs(setup)
        kill_at(argv, point)
        (killed,) = _runs(setup) - before
        assert (killed / "checkpoint-last.pth").is_file() and not (killed / "metrics.json").exists()
        with pytest.raises(UserError, match="incomplete run"):
            from retrieval.sims_io import load_sims
            load_sims(killed)
        assert run_cli(_train, ["--resume", killed, "--quiet"]) == 0
        assert np.array_equal(np.load(killed / "sims" / "test.npy"), np.load(reference / "sims" / "test.npy"))
        got, want = (json.loads((r / "metrics.json").read_text()) for r in (killed, reference))
        assert got["test"] == want["test"] and got["best_epoch"] == want["best_epoch"]
        assert not list(killed.glob(".*.tmp*")) and not (killed / "checkpoint-last.pth").exists()
    assert complete_runs(setup["root"] / "saved", "clotho-synthetic-tiny-ce")[-1] == killed  # newest by completion


def test_resume_refuses_an_archive_changed_since_the_run_started(tmp_path, tiny_data_dir):
    """A run resumed after its archive changed continued on other data (zeroed vggsound features: exit 0, test R@1
    9.4 instead of 16.9); the checkpoint now holds the archive files' size + mtime."""
    data = tmp_path / "data"
    shutil.copytree(tiny_data_dir, data)
    custom = (f"data_loader.args.data_dir={data},data_loader.args.synthetic.enabled=false,"
              f"trainer.save_dir={tmp_path / 'saved'},trainer.epochs=3,data_loader.args.batch_size=32")
    argv = [REPO / "train.py", "--config", TINY, "--custom_args", custom, "--threads", "1", "--quiet"]
    kill_at(argv, "train-step@2")  # after epoch 1's checkpoint
    (run,) = (tmp_path / "saved" / "clotho-synthetic-tiny-ce").iterdir()
    hickle = data / "structured-symlinks" / "aggregated_vggsound" / "vggsound-raw.hickle"
    st = hickle.stat()
    os.utime(hickle, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # rewritten (here: only its mtime moves)
    with pytest.raises(UserError, match=r"aggregated_vggsound/vggsound-raw.hickle changed since the run started"):
        _train(["--resume", run, "--quiet"])
    os.utime(hickle, ns=(st.st_atime_ns, st.st_mtime_ns))  # the same file again: the resume goes on
    assert run_cli(_train, ["--resume", run, "--quiet"]) == 0 and (run / "metrics.json").is_file()


def test_a_second_resume_of_a_run_being_trained_is_refused(setup, capsys):
    """Two `train.py --resume RUN` of one folder both trained into it (checkpoints, sims, metrics interleaved, exit
    0 twice). The writer holds <run>/.train.lock (trainer/run_lock.py); here the test process holds it."""
    from tests.test_trust_inputs import snapshot
    from trainer.run_lock import LOCK_NAME, RunFolderLock
    from trainer.trainer import fit
    from utils.config import load_config

    run = fit(load_config(TINY, setup["custom"]), TINY, "cpu", quiet=True, threads=1, stop_after_epochs=1)
    assert not (run / LOCK_NAME).exists()  # released (and removed) when fit returned
    holder = RunFolderLock()
    holder.acquire(run)
    try:
        before = snapshot(run)
        capsys.readouterr()
        assert run_cli(_train, ["--resume", run, "--quiet"]) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"error: {run}: being trained by another process "
                                                       f"(pid {os.getpid()} on "), lines
        assert snapshot(run) == before  # nothing swept, read-modified or written
    finally:
        holder.release()
    assert run_cli(_train, ["--resume", run, "--quiet"]) == 0  # free again: the resume runs to the end
    assert (run / "metrics.json").is_file() and not (run / LOCK_NAME).exists()  # a finished run holds no lock file


def _interrupt_at(argv: list, point: str, sig: int = signal.SIGINT) -> tuple[int, str]:
    """Start train.py, wait for the pause point, send ``sig`` (SIGINT: Ctrl-C); returns (exit code, stderr)."""
    env = dict(os.environ, TOOLKIT_TEST_PAUSE=point, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, *map(str, argv)], cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if line.startswith(f"PAUSED {point.split('#')[0]}"):
            proc.send_signal(sig)
    return proc.wait(timeout=120), "".join(seen)


def test_train_ctrl_c_names_the_resume_command_or_removes_a_run_with_nothing_to_resume(setup):
    argv = [REPO / "train.py", "--config", TINY, "--custom_args", setup["custom"], "--threads", "1", "--quiet"]
    before = _runs(setup)
    rc, err = _interrupt_at(argv, "train-step@1")  # before the first checkpoint
    assert rc == 130 and _runs(setup) == before, err
    assert "interrupted before the first checkpoint" in err and "removed (nothing to resume from)" in err

    rc, err = _interrupt_at(argv, "train-step@2")  # after epoch 1's checkpoint
    (kept,) = _runs(setup) - before
    assert rc == 130 and (kept / "checkpoint-last.pth").is_file(), err
    assert f"continue with python train.py --resume {kept}" in err
    assert f"--resume {kept}" in (kept / "train.log").read_text()
    shutil.rmtree(kept)


def test_train_sigterm_ends_a_run_as_ctrl_c_does(setup):
    """SIGTERM (kill, a scheduler's time limit, and torchrun's way of stopping rank 0 when another rank died) killed
    train.py on the spot: a new run with nothing to resume from was left as a folder that --resume refuses."""
    argv = [REPO / "train.py", "--config", TINY, "--custom_args", setup["custom"], "--threads", "1", "--quiet"]
    before = _runs(setup)
    rc, err = _interrupt_at(argv, "train-step@1", signal.SIGTERM)  # before the first checkpoint
    assert rc == 128 + signal.SIGTERM and _runs(setup) == before, err
    assert "interrupted before the first checkpoint" in err and err.strip().splitlines()[-1] == "terminated"


def _fusion(argv):
    import fusion.run as fr
    return fr.main_from_args(fr.build_parser().parse_args([str(a) for a in argv]))


def _qpp(argv):
    import importlib.util
    spec = importlib.util.spec_from_file_location("qpp_cli", REPO / "qpp.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.main([str(a) for a in argv])


@pytest.fixture(scope="module")
def done_run(tmp_path_factory):
    from qpp.synthetic_run import make_synthetic_run
    return make_synthetic_run(tmp_path_factory.mktemp("crashrun") / "run", {"val": 30, "test": 40}, seed=3)


def _state(folder: Path) -> dict:
    record = require_complete(folder)
    return {rel: e["sha256"] for rel, e in record["files"].items()}


def test_fusion_killed_rerun_keeps_the_old_set_or_the_new(done_run):
    out = done_run / "fusion"
    assert run_cli(_fusion, ["--run", done_run, "--quiet", "--no-plot", "--resamples", "20"]) == 0
    old = _state(out)
    rerun = [REPO / "fusion.py", "--run", done_run, "--quiet", "--no-plot", "--resamples", "20",
             "--methods", "combsum,rrf", "--norm", "z-score"]
    for point in ("output-build", "output-swap"):
        kill_at(rerun, point)
        if point == "output-swap":
            assert not out.exists()  # killed between the renames: the reader below puts the old set back
        sims, _ = __import__("retrieval.sims_io", fromlist=["load_sims"]).load_sims(out / "combsum.npy")
        assert _state(out) == old and sha256_file(out / "combsum.npy") == old["combsum.npy"]
    assert not list(done_run.glob(".fusion.*"))  # killed writers' temporaries are gone
    assert run_cli(_fusion, [a for a in rerun[1:]]) == 0
    new = _state(out)
    assert set(new) < set(old) and json.loads((out / "results.json").read_text())["params"]["norm"] == "z-score"


def test_system_fusion_killed_leaves_the_old_set_or_the_new(tmp_path):
    from sysfusion_helpers import three_systems

    runs = three_systems(tmp_path / "runs", n=12)
    out = tmp_path / "fused" / "sf"
    base = ["--runs", *runs, "--out", out, "--quiet", "--no-plot", "--resamples", "20"]
    kill_at([REPO / "fusion.py", *base], "output-build")  # every file written, not yet recorded
    with pytest.raises(UserError, match="output folder not found"):
        require_complete(out)  # the first run never finished: no folder at all (its temporary is removed)
    assert list((tmp_path / "fused").iterdir()) == []
    assert run_cli(_fusion, base) == 0
    old = _state(out)
    for point in ("output-build", "output-swap"):
        kill_at([REPO / "fusion.py", *base, "--systems-methods", "combsum"], point)
        assert _state(out) == old  # the complete old set (put back by the reader after a kill mid-swap)
    assert sorted(p.name for p in (tmp_path / "fused").iterdir()) == ["sf"]
    assert run_cli(_fusion, base + ["--systems-methods", "combsum"]) == 0
    assert "systems-combsum.npy" in _state(out) and "weights.json" not in _state(out)


def test_qpp_killed_rerun_never_mixes_weights(done_run):
    qdir = done_run / "qpp"
    base = ["--run", done_run, "--features", "score", "--models", "linear", "--n-resamples", "20", "--no-plots"]
    assert run_cli(_qpp, base) == 0
    old = _state(qdir)
    old_mapping = json.loads((qdir / "weights.json").read_text())["mapping"]
    for point in ("output-build", "output-swap"):
        kill_at([REPO / "qpp.py", *base, "--mapping", "fork"], point)
        # fusion.py --run reads the weights: the complete old set (restored if needed), never the fork's
        assert run_cli(_fusion, ["--run", done_run, "--quiet", "--no-plot", "--resamples", "20",
                                 "--methods", "weighted_combsum", "--out", done_run / "f2"]) == 0
        assert _state(qdir) == old and json.loads((qdir / "weights.json").read_text())["mapping"] == old_mapping
    (qdir / "complete.json").unlink()  # a set without its record (an older writer): refused
    rc = run_cli(_fusion, ["--run", done_run, "--quiet", "--no-plot", "--out", done_run / "f3"])
    assert rc == 2 and not (done_run / "f3").exists()
    assert run_cli(_qpp, base + ["--mapping", "fork", "--out", done_run / "qpp-fork"]) == 0
    assert json.loads((done_run / "qpp-fork" / "weights.json").read_text())["mapping"] == "fork"


def test_synthetic_killed_generation_is_removed_on_next_start(tmp_path):
    from data.synthetic import generate

    out = tmp_path / "data"
    kill_at(["-m", "data.synthetic", "--out", out, "--size", "tiny"], "synthetic-write")
    assert not (out / "structured-symlinks").exists() and list(out.glob(".structured-symlinks.tmp-*"))
    final = generate(out, size="tiny", seed=0, quiet=True)
    assert final.is_dir() and not list(out.glob(".structured-symlinks.*"))
    shutil.rmtree(out)


def test_a_qrels_file_that_disagrees_with_its_split_list_fails_before_training(tmp_path, tiny_data_dir):
    """Before: all epochs ran, then 'query ... is not a row of the matrix being evaluated' and the run was removed."""
    data = tmp_path / "data"
    shutil.copytree(tiny_data_dir, data)
    val_list = data / "structured-symlinks" / "val_list.txt"
    val_list.write_text("".join(val_list.read_text().splitlines(keepends=True)[:3]))  # the qrels still judge all
    custom = (f"data_loader.args.data_dir={data},data_loader.args.synthetic.enabled=false,"
              f"trainer.save_dir={tmp_path / 'saved'},trainer.epochs=50")
    with pytest.raises(UserError, match=r"qrels-val.trec.*\(qrels-val.trec and val_list.txt disagree"):
        _train(["--config", TINY, "--custom_args", custom, "--threads", "1", "--quiet"])
    assert not (tmp_path / "saved").exists() or not any((tmp_path / "saved").rglob("metrics.json"))
