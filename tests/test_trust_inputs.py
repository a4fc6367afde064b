"""Bad inputs of every class of issue 10, many per class: each must exit 2 with ONE line naming the file / key /
clip, no traceback, and leave the files under the test's folder exactly as they were.

Classes (ids in the parametrisation): ranges (config values), unsupported (config keys not acted on), flags
(argparse ranges), os (read-only / full / file-instead-of-folder paths), identity (wrong split, duplicates,
resume identity), stale (incomplete or changed output sets), splits (bad test split found before training),
nonfinite (NaN/inf during training).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from utils.config_rules import FIXED, RANGES
from utils.errors import run_cli

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "configs" / "clotho-synthetic" / "tiny-ce.json"


# ------------------------------------------------------------------------------------------------ helpers
def snapshot(root: Path) -> dict[str, tuple]:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for d in dirnames:
            out[os.path.relpath(os.path.join(dirpath, d), root)] = ("dir",)
        for f in filenames:
            p = os.path.join(dirpath, f)
            st = os.lstat(p)
            out[os.path.relpath(p, root)] = (st.st_size, st.st_mtime_ns)
    return out


def refuse(main, argv, needle: str, root: Path, capsys) -> str:
    """Run a CLI in-process; assert exit 2, one line containing ``needle``, no traceback, no file changed."""
    before = snapshot(root)
    capsys.readouterr()
    rc = run_cli(main, [str(a) for a in argv])
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == 2, f"rc={rc}: {err}"
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    assert needle in lines[0], f"{needle!r} not in {lines[0]!r}"
    assert snapshot(root) == before, "files changed"
    return lines[0]


def _train_main(argv):
    import train
    return train.main(argv)


def _fusion_main(argv):
    import fusion.run as fr
    return fr.main_from_args(fr.build_parser().parse_args(argv))


def _qpp_main(argv):
    import qpp as _  # noqa: F401
    import importlib.util
    spec = importlib.util.spec_from_file_location("qpp_cli", REPO / "qpp.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.main(argv)


def _synthetic_main(argv):
    from data.synthetic import main
    return main(argv)


def _config_main(argv):
    from utils.config import main
    return main(argv)


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_data_dir):
    """A tiny trained run (complete, with val+test dumps and a complete qpp set), and a killed run to resume."""
    from qpp.run import run_qpp
    from trainer.trainer import fit
    from utils.config import load_config

    root = tmp_path_factory.mktemp("trust")
    custom = (f"data_loader.args.data_dir={tiny_data_dir},data_loader.args.synthetic.enabled=false,"
              f"trainer.save_dir={root / 'saved'},trainer.epochs=2,data_loader.args.batch_size=32,arch.args.use_ce=")
    cfg = load_config(TINY, custom)
    run = fit(cfg, TINY, "cpu", quiet=True, threads=1)
    run_qpp(run, features=["score"], models=["linear"], n_resamples=50, plots=False, log=lambda s: None)
    killed = fit(load_config(TINY, custom), TINY, "cpu", quiet=True, threads=1, stop_after_epochs=1)
    return {"root": root, "run": run, "killed": killed, "custom": custom, "data": tiny_data_dir}


def _copy_run(world, tmp_path) -> Path:
    dst = tmp_path / "saved" / "clotho-synthetic-tiny-ce" / world["run"].name
    shutil.copytree(world["run"], dst)
    return dst


# ------------------------------------------------------------------------------------------------ class 2: ranges
RANGE_CASES = [
    ("optimizer.args.lr=-1", "optimizer.args.lr"), ("optimizer.args.lr=0", "optimizer.args.lr"),
    ("optimizer.args.lr=NaN", "optimizer.args.lr"), ("optimizer.args.lr=Infinity", "optimizer.args.lr"),
    ("optimizer.args.lr=-Infinity", "optimizer.args.lr"), ("optimizer.args.weight_decay=-0.1", "weight_decay"),
    ("lr_scheduler.args.gamma=-1", "gamma"), ("lr_scheduler.args.gamma=0", "gamma"),
    ("lr_scheduler.args.gamma=1.5", "gamma"), ("lr_scheduler.args.step_size=0", "step_size"),
    ("data_loader.args.batch_size=0", "batch_size"), ("data_loader.args.batch_size=1", "batch_size"),
    ("data_loader.args.batch_size=-5", "batch_size"), ("data_loader.args.max_tokens.text=0", "max_tokens.text"),
    ("data_loader.args.max_tokens.audio=0", "max_tokens.audio"),
    ("data_loader.args.max_tokens.vggsound=-1", "max_tokens.vggsound"), ("trainer.epochs=0", "trainer.epochs"),
    ("seed=-1", "seed"), ("seed=4294967296", "seed"), ("loss.args.margin=-0.2", "margin"),
    ("arch.args.num_g_layers=0", "num_g_layers"), ("arch.args.vlad_clusters.text=0", "vlad_clusters.text"),
    ("arch.args.ghost_clusters.text=-1", "ghost_clusters.text"), ("arch.args.ce_shared_dim=0", "ce_shared_dim"),
    ("arch.args.use_mish=2", "use_mish"), ("data_loader.args.synthetic.seed=-1", "synthetic.seed"),
    ("data_loader.args.num_test_captions=0", "num_test_captions"),
    ("data_loader.args.num_test_captions=6", "num_test_captions"), ("trainer.save_period=0", "save_period"),
    ("data_loader.args.num_workers=-1", "num_workers"), ("data_loader.args.text_dropout=1.0", "text_dropout"),
]


@pytest.mark.parametrize("override, key", RANGE_CASES, ids=[c[0] for c in RANGE_CASES])
def test_ranges_config_values(override, key, tmp_path, capsys):
    refuse(_train_main, ["--config", TINY, "--custom_args", f"trainer.save_dir={tmp_path},{override}"],
           key, tmp_path, capsys)


def test_ranges_cover_every_numeric_schema_key():
    from utils.config_rules import _leaves, rule_for
    schema = json.loads((REPO / "configs" / "base_config.json").read_text())
    numeric = [k for k, v in _leaves(schema) if isinstance(v, (int, float)) and not isinstance(v, bool)]
    assert numeric and all(rule_for(k) is not None for k in numeric), [k for k in numeric if rule_for(k) is None]
    assert all("*" in k or k in {key for key, _ in _leaves(schema)} for k in RANGES)


# ------------------------------------------------------------------------------------------------ class 3: unread keys
def _other_value(value):
    if isinstance(value, bool):
        return json.dumps(not value)
    if isinstance(value, (int, float)):
        return json.dumps(value + 1 if isinstance(value, int) else 0.5)
    if isinstance(value, list):
        return '["t2v_metrics"]'
    return "something_else"


@pytest.mark.parametrize("key", sorted(FIXED))
def test_unsupported_keys_rejected(key, tmp_path, capsys):
    line = refuse(_train_main, ["--config", TINY, "--custom_args",
                                f"trainer.save_dir={tmp_path},{key}={_other_value(FIXED[key][0])}"], key, tmp_path, capsys)
    assert "not supported" in line or "must be" in line


def test_unsupported_keys_accept_their_value(tmp_path):
    from utils.config import load_config
    cfg = load_config(TINY, ",".join(f"{k}={json.dumps(v)}" for k, (v, _) in FIXED.items()))
    assert cfg["disable_nan_checks"] is False


# ------------------------------------------------------------------------------------------------ flags
FLAG_CASES = [
    (_train_main, ["--config", TINY, "--epochs", "0"], "--epochs"),
    (_train_main, ["--config", TINY, "--epochs", "-1"], "--epochs"),
    (_train_main, ["--config", TINY, "--epochs", "x"], "--epochs"),
    (_train_main, ["--config", TINY, "--threads", "0"], "--threads"),
    (_train_main, ["--config", TINY, "--seeds", "-1"], "--seeds"),
    (_train_main, ["--config", TINY, "--seeds", "1,1"], "--seeds"),
    (_train_main, ["--config", TINY, "--seeds", "a"], "--seeds"),
    (_train_main, ["--config", TINY, "--bogus"], "--bogus"),
    (_train_main, ["--config", TINY, "--force-threads"], "--force-threads"),
    (_fusion_main, ["--run", "R", "--depth", "0"], "--depth"),
    (_fusion_main, ["--run", "R", "--rrf_k", "-1"], "--rrf_k"),
    (_fusion_main, ["--run", "R", "--trec-depth", "0"], "--trec-depth"),
    (_fusion_main, ["--run", "R", "--resamples", "0"], "--resamples"),
    (_fusion_main, ["--sims", "S", "--captions_per_clip", "0"], "--captions_per_clip"),
    (_qpp_main, ["--run", "R", "--cv", "1"], "--cv"),
    (_qpp_main, ["--run", "R", "--cv", "0"], "--cv"),
    (_qpp_main, ["--run", "R", "--n-resamples", "0"], "--n-resamples"),
    (_qpp_main, ["--run", "R", "--n-resamples", "-5"], "--n-resamples"),
    (_qpp_main, ["--run", "R", "--seed", "-1"], "--seed"),
    (_qpp_main, ["--run", "R", "--temperature", "0"], "--temperature"),
    (_qpp_main, ["--run", "R", "--temperature", "nan"], "--temperature"),
    (_qpp_main, ["--run", "R", "--temperature", "-1"], "--temperature"),
    (_qpp_main, ["--run", "R", "--mapping", "bogus"], "--mapping"),
    (_synthetic_main, ["--out", "O", "--seed", "-1"], "--seed"),
    (_synthetic_main, ["--out", "O", "--size", "huge"], "--size"),
    (_config_main, [str(TINY), "--bogus"], "--bogus"),
]


@pytest.mark.parametrize("main, argv, needle", FLAG_CASES, ids=[f"{m.__name__}{' '.join(map(str, a[-2:]))}" for m, a, _ in FLAG_CASES])
def test_flags_out_of_range(main, argv, needle, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    refuse(main, argv, needle, tmp_path, capsys)


def test_flags_cv_more_folds_than_clips(world, tmp_path, capsys):
    run = _copy_run(world, tmp_path)
    refuse(_qpp_main, ["--run", run, "--cv", "1000", "--features", "score", "--models", "linear"], "--cv 1000",
           tmp_path, capsys)


# ------------------------------------------------------------------------------------------------ class 5: OS errors
def _mount_tmpfs(path: Path, opts: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    return subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path)], capture_output=True).returncode == 0


@pytest.fixture
def mounts(tmp_path, request):
    """A read-only and an almost full (256 KiB) real tmpfs; skipped where mounting is not allowed."""
    ro, full = tmp_path / "ro", tmp_path / "full"
    if not _mount_tmpfs(ro, "ro,size=1m"):
        pytest.skip("cannot mount a tmpfs here (needs root)")
    if not _mount_tmpfs(full, "size=256k"):
        subprocess.run(["umount", str(ro)])
        pytest.skip("cannot mount a tmpfs here (needs root)")
    request.addfinalizer(lambda: [subprocess.run(["umount", str(m)]) for m in (ro, full)])
    fd = os.open(full / "filler", os.O_WRONLY | os.O_CREAT)  # a real full disk: every data block taken
    try:
        while os.write(fd, b"\0" * 4096):
            pass
    except OSError:
        pass
    finally:
        os.close(fd)
    yield ro, full


def test_os_errors(world, tmp_path, mounts, capsys):
    ro, full = mounts
    run = _copy_run(world, tmp_path)
    afile = tmp_path / "a-file"
    afile.write_text("x")
    cases = [
        (_fusion_main, ["--run", run, "--out", ro / "f", "--no-plot", "--resamples", "20"], str(ro)),
        (_fusion_main, ["--run", run, "--out", full / "f", "--resamples", "20", "--quiet"], "No space left"),
        (_fusion_main, ["--run", run, "--out", afile], str(afile)),
        (_qpp_main, ["--run", run, "--out", afile, "--features", "score"], str(afile)),
        (_qpp_main, ["--run", run, "--out", ro / "q", "--features", "score", "--models", "linear",
                     "--n-resamples", "20", "--no-plots"], str(ro)),
        (_synthetic_main, ["--out", ro / "d", "--size", "tiny"], str(ro)),
        (_synthetic_main, ["--out", full / "d", "--size", "tiny"], "No space left"),
        (_synthetic_main, ["--out", afile, "--size", "tiny"], str(afile)),
        (_train_main, ["--config", TINY, "--custom_args", f"{world['custom']},trainer.save_dir={ro}"], str(ro)),
        (_train_main, ["--config", TINY, "--custom_args", f"{world['custom']},trainer.save_dir={afile}"], str(afile)),
        (_config_main, [_latin1_config(tmp_path)], "UTF-8"),
    ]
    for main, argv, needle in cases:
        refuse(main, argv, needle, tmp_path, capsys)


def test_os_full_disk_during_training(world, tmp_path, mounts, capsys):
    _, full = mounts
    refuse(_train_main, ["--config", TINY, "--threads", "1", "--quiet", "--custom_args",
                         f"{world['custom']},trainer.save_dir={full},trainer.epochs=2"], "No space left", tmp_path,
           capsys)
    assert [p.name for p in full.iterdir()] == ["filler"]  # the run folder of the failed run is gone
    open_there = [t for t in _open_files() if t.startswith(str(full))]
    assert open_there == [], open_there  # the run lock's file was left open (its pid could not be written)


def _open_files() -> list[str]:
    out = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            out.append(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:
            pass
    return out


def _latin1_config(tmp_path: Path) -> Path:
    p = tmp_path / "latin1.json"
    p.write_bytes('{"seed": 0, "trainer": {"save_dir": "caf\u00e9"}}'.encode("latin-1"))
    return p


# ------------------------------------------------------------------------------------------------ class 7: identity
def test_identity(world, tmp_path, capsys):
    from utils.outputs import write_run_record

    run = _copy_run(world, tmp_path)
    sims = run / "sims"
    unrecorded = _copy_run(world, tmp_path / "unrecorded")
    (unrecorded / "complete.json").unlink()
    # the checks behind the record: runs whose record was written after the damage (a legacy run recorded with
    # scripts/record_run.py, or a copy re-recorded by hand) must still be refused by the manifest checks
    legacy = _copy_run(world, tmp_path / "legacy")
    for ext in (".npy", ".json"):  # val copied over test, in a run with and without a completion record
        shutil.copy(sims / f"val{ext}", sims / f"test{ext}")
        shutil.copy(legacy / "sims" / f"val{ext}", legacy / "sims" / f"test{ext}")
    write_run_record(legacy, "tests")
    other = _copy_run(world, tmp_path / "other")
    cfg = json.loads((other / "config.json").read_text())
    cfg["seed"] = 7
    (other / "config.json").write_text(json.dumps(cfg))  # the sims now belong to another config
    write_run_record(other, "tests")
    relabelled = _copy_run(world, tmp_path / "relabel")
    for ext in (".npy", ".json"):
        shutil.copy(relabelled / "sims" / f"val{ext}", relabelled / "sims" / f"test{ext}")
    man = json.loads((relabelled / "sims" / "test.json").read_text())
    man["split"] = "test"  # val data labelled as test: the clip ids give it away
    (relabelled / "sims" / "test.json").write_text(json.dumps(man))
    write_run_record(relabelled, "tests")
    dup_q = tmp_path / "dupq"
    _write_manifest_variant(run, dup_q, lambda m: m["query_ids"].__setitem__(1, m["query_ids"][0]))
    dup_c = tmp_path / "dupc"
    _write_manifest_variant(run, dup_c, lambda m: m["clip_ids"].__setitem__(1, m["clip_ids"][0]))
    qpp_dup = _copy_run(world, tmp_path / "qdup")
    w = json.loads((qpp_dup / "qpp" / "weights.json").read_text())
    w["query_ids"][1] = w["query_ids"][0]
    dup_w = tmp_path / "w"
    dup_w.mkdir()
    shutil.copy(qpp_dup / "qpp" / "weights.npy", dup_w / "weights.npy")
    (dup_w / "weights.json").write_text(json.dumps(w))
    cases = [
        (_fusion_main, ["--run", run, "--no-plot"], "test.npy: changed since"),
        (_fusion_main, ["--run", unrecorded, "--no-plot"], "no complete.json"),
        (_qpp_main, ["--run", unrecorded, "--features", "score"], "no complete.json"),
        (_fusion_main, ["--run", legacy, "--no-plot"], "for split 'val', not 'test'"),
        (_fusion_main, ["--run", other, "--no-plot"], "written by a run with config"),
        (_fusion_main, ["--run", relabelled, "--no-plot"], "clip ids differ"),
        (_qpp_main, ["--run", legacy, "--features", "score"], "for split 'val', not 'test'"),
        (_fusion_main, ["--sims", dup_q / "test.npy", "--no-plot"], "query id"),
        (_fusion_main, ["--sims", dup_c / "test.npy", "--no-plot"], "clip id"),
        (_fusion_main, ["--run", qpp_dup, "--weights", dup_w / "weights.npy", "--no-plot"], "twice"),
    ]
    for main, argv, needle in cases:
        refuse(main, argv, needle, tmp_path, capsys)


def _write_manifest_variant(run: Path, folder: Path, change) -> None:
    folder.mkdir()
    shutil.copy(run / "sims" / "test.npy", folder / "test.npy")
    man = json.loads((run / "sims" / "test.json").read_text())
    change(man)
    (folder / "test.json").write_text(json.dumps(man))


def test_identity_resume(world, tmp_path, capsys):
    killed = tmp_path / "saved" / "clotho-synthetic-tiny-ce" / world["killed"].name
    shutil.copytree(world["killed"], killed)
    refuse(_train_main, ["--resume", killed, "--threads", "2"], "--force-threads", tmp_path, capsys)
    cfg = json.loads((killed / "config.json").read_text())
    cfg["optimizer"]["args"]["lr"] = 0.02  # edited after the kill: config.json and the checkpoint disagree
    (killed / "config.json").write_text(json.dumps(cfg))
    refuse(_train_main, ["--resume", killed], "the checkpoint was written with config", tmp_path, capsys)
    refuse(_train_main, ["--resume", killed, "--config", TINY, "--custom_args", world["custom"]],
           "config differs", tmp_path, capsys)


# ------------------------------------------------------------------------------------------------ class 6: stale outputs
def test_stale_outputs(world, tmp_path, capsys):
    run = _copy_run(world, tmp_path)
    unfinished = _copy_run(world, tmp_path / "u")
    (unfinished / "qpp" / "complete.json").unlink()  # weights without a completion record
    changed_w = _copy_run(world, tmp_path / "cw")
    np.save(changed_w / "qpp" / "weights.npy", np.ones(len(np.load(changed_w / "qpp" / "weights.npy"))))
    changed_j = _copy_run(world, tmp_path / "cj")
    meta = json.loads((changed_j / "qpp" / "weights.json").read_text())
    meta["mapping"] = "fork"
    (changed_j / "qpp" / "weights.json").write_text(json.dumps(meta))
    tmpdir = run.parent / f".{run.name}.tmp-{os.getpid()}-abcd"
    tmpdir.mkdir()
    shutil.copy(run / "qpp" / "weights.npy", tmpdir / "weights.npy")
    incomplete = _copy_run(world, tmp_path / "inc")
    (incomplete / "metrics.json").unlink()
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    cases = [
        (_fusion_main, ["--run", unfinished, "--no-plot"], "incomplete output set"),
        (_fusion_main, ["--run", changed_w, "--no-plot"], "weights.npy: changed since"),
        (_fusion_main, ["--run", changed_j, "--no-plot"], "weights.json: changed since"),
        (_fusion_main, ["--run", run, "--weights", tmpdir / "weights.npy", "--no-plot"], "unfinished writer"),
        (_fusion_main, ["--run", incomplete, "--no-plot"], "incomplete run"),
        (_qpp_main, ["--run", incomplete, "--features", "score"], "incomplete run"),
        (_fusion_main, ["--run", run, "--out", foreign, "--no-plot"], "not a complete output folder"),
        (_qpp_main, ["--run", run, "--out", foreign, "--features", "score"], "not a complete output folder"),
    ]
    for main, argv, needle in cases:
        refuse(main, argv, needle, tmp_path, capsys)


# ------------------------------------------------------------------------------------------------ class 4: splits first
@pytest.mark.parametrize("damage, needle", [
    (lambda root: (root / "test_list.txt").write_text("no_such_clip.wav\nnor_this.wav\n"), "no_such_clip.wav"),
    (lambda root: (root / "test_list.txt").unlink(), "test_list.txt"),
    (lambda root: (root / "test_list.txt").write_text("synthetic_00001.wav\n"), "synthetic_00001.wav"),
], ids=["unknown-test-clip", "missing-test-list", "train-clip-in-test"])
@pytest.mark.parametrize("precision", ["float32", "bf16"])  # test split checked and freed / read once and kept
def test_splits_validated_before_training(world, tmp_path, damage, needle, precision, capsys):
    data = tmp_path / "data"
    shutil.copytree(world["data"], data)
    damage(data / "structured-symlinks")
    refuse(_train_main, ["--config", TINY, "--threads", "1", "--quiet", "--precision", precision, "--custom_args",
                         f"{world['custom']},data_loader.args.data_dir={data},trainer.save_dir={tmp_path / 's'}"],
           needle, tmp_path, capsys)


# ------------------------------------------------------------------------------------------------ class 1: non-finite
def _poisoned(world, split: str, where: str, value: float):
    from trainer.trainer import load_splits
    from utils.config import load_config

    cfg = load_config(TINY, world["custom"])
    data = load_splits(cfg, ["train", "val", "test"])
    ts = data[split]
    if where == "audio":
        ts.experts["audio"][3, 0, 0] = value
    else:
        ts.text[3, :, 0, 0] = value  # every caption: whichever one an epoch draws
    return cfg, data, ts.clip_ids[3]


@pytest.mark.parametrize("split, where, value", [
    ("train", "audio", float("nan")), ("train", "text", float("inf")), ("val", "audio", float("nan")),
    ("test", "audio", float("nan")), ("test", "text", -float("inf")),
], ids=["train-audio-nan", "train-text-inf", "val-audio-nan", "test-audio-nan", "test-text-neginf"])
def test_nonfinite_during_training(world, tmp_path, split, where, value, capsys):
    from trainer.trainer import fit

    cfg, data, clip = _poisoned(world, split, where, value)
    cfg["trainer"]["save_dir"] = str(tmp_path / "saved")
    line = refuse(lambda argv: fit(cfg, TINY, "cpu", quiet=True, data=data, threads=1), [], clip, tmp_path, capsys)
    assert "non-finite" in line or "loss is" in line


def test_nonfinite_divergence(tmp_path, world, capsys):
    refuse(_train_main, ["--config", TINY, "--threads", "1", "--quiet", "--custom_args",
                         f"{world['custom']},trainer.save_dir={tmp_path / 's'},optimizer.args.lr=1e30"],
           "training diverged", tmp_path, capsys)


def test_flags_encoder(world, tmp_path, capsys):
    run = _copy_run(world, tmp_path)
    refuse(_qpp_main, ["--run", run, "--encoder", tmp_path], "--encoder applies to --reproduce-fork only", tmp_path,
           capsys)
    refuse(_qpp_main, ["--run", run, "--reproduce-fork", "--encoder", tmp_path / "nope"], "folder not found",
           tmp_path, capsys)
