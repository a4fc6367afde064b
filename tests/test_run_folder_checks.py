"""Run folders and the matrices in them, as every reader sees them (fusion.py --run / --config / --runs, qpp.py,
search.py): each bad input exits 2 with ONE line naming the folder / file / key / clip, and changes no file (no
output folder left behind)."""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from qpp.synthetic_run import make_synthetic_run
from utils.errors import run_cli
from utils.io import write_json
from utils.outputs import write_run_record

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "configs" / "clotho-synthetic" / "tiny-ce.json"


def _script(name: str):
    spec = importlib.util.spec_from_file_location(f"{name}_script_rfc", REPO / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.main


FUSION, QPP = _script("fusion"), _script("qpp")
FAST_FUSION = ["--no-plot", "--quiet", "--resamples", "50"]
FAST_QPP = ["--features", "score", "--models", "linear", "--no-plots", "--n-resamples", "50"]


from tests.test_trust_inputs import snapshot  # noqa: E402  (every file and folder, size + mtime)


def refuse(main, argv, needles, root: Path, capsys) -> str:
    """Exit 2, one line ``error: ...`` holding every needle, no traceback, nothing under ``root`` changed."""
    before = snapshot(root)
    capsys.readouterr()
    rc = run_cli(main, [str(a) for a in argv])
    cap = capsys.readouterr()
    lines = [ln for ln in cap.err.splitlines() if ln.strip()]
    assert rc == 2, f"rc={rc}: {cap.err}"
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in cap.err, cap.err
    for needle in [needles] if isinstance(needles, str) else needles:
        assert str(needle) in lines[0], f"{needle!r} not in {lines[0]!r}"
    assert snapshot(root) == before, "files changed"
    return lines[0]


def _run(root: Path, name: str = "a", n: dict | None = None, seed: int = 0) -> Path:
    return make_synthetic_run(root / "saved" / "exp" / name, n or {"val": 8, "test": 6}, seed=seed)


def _config(root: Path) -> Path:
    """A config whose experiment folder is ``<root>/saved/<cfgdir>-x``."""
    cfg = root / "cfgdir" / "x.json"
    cfg.parent.mkdir(parents=True, exist_ok=True)
    cfg.write_text(json.dumps({"inherit_from": str(TINY), "trainer": {"save_dir": str(root / "saved")}}))
    return cfg


# ------------------------------------------------------------------------------------------------ item 6: records
def _unrecorded(run: Path) -> Path:
    (run / "complete.json").unlink()
    return run


def _val_over_test(run: Path) -> Path:
    """The audit's case: val's matrix copied over test's (same size here), record removed."""
    shutil.copy(run / "sims" / "val.npy", run / "sims" / "test.npy")
    return _unrecorded(run)


def _test_added_after_the_record(run: Path) -> Path:
    """A record that lists val only: test.npy came later (copied in by hand)."""
    rec = json.loads((run / "complete.json").read_text())
    for rel in ("sims/test.npy", "sims/test.json"):
        del rec["files"][rel]
    write_json(run / "complete.json", rec)
    return run


def _killed(run: Path) -> Path:
    (run / "metrics.json").unlink()
    return run


BROKEN_RUNS = {
    "unrecorded": (_unrecorded, "no complete.json"),
    "val-over-test-unrecorded": (_val_over_test, "no complete.json"),
    "test-not-in-record": (_test_added_after_the_record, "not part of the completed output set"),
    "killed": (_killed, "incomplete run (no metrics.json"),
    "sims-subfolder": (lambda run: run / "sims", "not a run folder (no config.json, metrics.json or sims/"),  # not "resume RUN/sims"
}


@pytest.mark.parametrize("case", list(BROKEN_RUNS))
@pytest.mark.parametrize("reader", ["fusion-run", "fusion-runs", "fusion-runs-second", "qpp-run"])
def test_every_reader_refuses_a_run_folder_without_a_valid_record(tmp_path, capsys, case, reader):
    make, needle = BROKEN_RUNS[case]
    good = _run(tmp_path, "good", seed=1)
    bad = make(_run(tmp_path, "bad"))
    argv = {"fusion-run": (FUSION, ["--run", bad, *FAST_FUSION]),
            "fusion-runs": (FUSION, ["--runs", bad, good, *FAST_FUSION]),
            "fusion-runs-second": (FUSION, ["--runs", good, bad, *FAST_FUSION]),
            "qpp-run": (QPP, ["--run", bad, *FAST_QPP])}[reader]
    where = bad / "sims" / "test.npy" if case == "test-not-in-record" else bad
    refuse(*argv, [needle, where], tmp_path, capsys)


@pytest.mark.parametrize("case", [c for c in BROKEN_RUNS if c != "sims-subfolder"])
def test_a_matrix_named_inside_a_run_folder_gets_the_run_checks(tmp_path, capsys, case):
    """``fusion.py --sims RUN/sims/test.npy`` is refused exactly as ``--run RUN`` (it was read as the user's own
    file when the run had no record)."""
    make, needle = BROKEN_RUNS[case]
    run = _run(tmp_path, "bad")
    write_json(run / "run.json", {})  # as train.py writes when it creates the folder
    bad = make(run)
    where = bad / "sims" / "test.npy" if case == "test-not-in-record" else bad
    refuse(FUSION, ["--sims", bad / "sims" / "test.npy", *FAST_FUSION], [needle, where], tmp_path, capsys)


def test_a_matrix_named_inside_a_complete_run_is_read_and_its_split_checked(tmp_path, capsys):
    run = _run(tmp_path, "good")
    out = tmp_path / "fused"
    assert run_cli(FUSION, [str(a) for a in ["--sims", run / "sims" / "test.npy", "--out", out, *FAST_FUSION]]) == 0
    assert any(out.iterdir())
    man = json.loads((run / "sims" / "val.json").read_text())
    man["split"] = "test"  # val's manifest relabelled: the record catches the edit before the split check
    write_json(run / "sims" / "val.json", man)
    refuse(FUSION, ["--sims", run / "sims" / "val.npy", *FAST_FUSION], [run / "sims" / "val.json", "changed"],
           tmp_path, capsys)


@pytest.mark.parametrize("main, extra", [(FUSION, FAST_FUSION), (QPP, ["--eval_from_training_config", *FAST_QPP])])
def test_newest_run_selection_refuses_an_unrecorded_newest_run(tmp_path, capsys, main, extra):
    """--config picks the newest finished run; when that one has no record it is refused, not silently replaced
    by an older run nor used unchecked."""
    cfg = _config(tmp_path)
    exp = tmp_path / "saved" / "cfgdir-x"
    make_synthetic_run(exp / "2026-01-01_00-00-00_seed-0", {"val": 8, "test": 6})
    newest = _unrecorded(make_synthetic_run(exp / "2026-01-02_00-00-00_seed-0", {"val": 8, "test": 6}, seed=3))
    os.utime(newest / "metrics.json", (2e9, 2e9))
    refuse(main, ["--config", cfg, *extra], ["no complete.json", newest, "scripts/record_run.py"], tmp_path, capsys)


def test_search_refuses_an_unrecorded_run(tmp_path, capsys, tiny_config):
    import torch

    import search
    from model import build_model

    run = tmp_path / "run"
    run.mkdir()
    write_json(run / "config.json", tiny_config)
    torch.save({"state_dict": build_model(tiny_config).state_dict(), "config_hash": "x"}, run / "trained_model.pth")
    write_json(run / "metrics.json", {})
    refuse(search.main, ["--run", run, "a dog"], ["no complete.json", run], tmp_path, capsys)
    write_run_record(run, "tests")
    torch.save({"state_dict": {}, "config_hash": "x"}, run / "trained_model.pth")  # replaced after the record
    refuse(search.main, ["--run", run, "a dog"], ["trained_model.pth: changed since"], tmp_path, capsys)


def _record_main(argv):
    spec = importlib.util.spec_from_file_location("record_run_rfc", REPO / "scripts" / "record_run.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.main(argv)


def _legacy(root: Path) -> Path:
    """A run as an older train.py left it: config.json, trained_model.pth, sims, metrics.json; no record."""
    run = _unrecorded(_run(root, "legacy"))
    write_json(run / "config.json", {"seed": 0})
    (run / "trained_model.pth").write_bytes(b"checkpoint")
    return run


def test_record_run_is_the_escape_hatch_for_legacy_runs(tmp_path, capsys):
    run = _legacy(tmp_path)
    refuse(FUSION, ["--run", run, *FAST_FUSION], "no complete.json", tmp_path, capsys)
    assert run_cli(_record_main, [str(run)]) == 0
    files = json.loads((run / "complete.json").read_text())["files"]
    assert set(files) == {"config.json", "trained_model.pth", "sims/test.npy", "sims/test.json", "sims/val.npy",
                          "sims/val.json"}
    assert run_cli(FUSION, ["--run", str(run), *FAST_FUSION]) == 0
    refuse(_record_main, [run], "already recorded", tmp_path, capsys)


def _copied_split(run: Path) -> None:
    for ext in (".npy", ".json"):
        shutil.copy(run / "sims" / f"val{ext}", run / "sims" / f"test{ext}")
    man = json.loads((run / "sims" / "test.json").read_text())
    man["split"] = "test"
    write_json(run / "sims" / "test.json", man)


@pytest.mark.parametrize("damage, needle", [
    (lambda r: (r / "metrics.json").unlink(), "no metrics.json"),
    (lambda r: (r / "trained_model.pth").unlink(), "trained_model.pth: missing"),
    (lambda r: (r / "config.json").unlink(), "not a run folder (no config.json"),  # not "finish it with --resume"
    (lambda r: shutil.rmtree(r / "sims"), "no sims/<split>.npy"),
    (lambda r: [shutil.copy(r / "sims" / f"val{e}", r / "sims" / f"test{e}") for e in (".npy", ".json")],
     "for split 'val', not 'test'"),
    (_copied_split, "the same matrix as sims/"),
])
def test_record_run_refuses_what_it_can_check(tmp_path, capsys, damage, needle):
    run = _legacy(tmp_path)
    damage(run)
    refuse(_record_main, [run], needle, tmp_path, capsys)
    assert not (run / "complete.json").exists()


# ------------------------------------------------------------------------------------------------ item 5: sizes
def test_a_one_clip_split_is_refused_by_every_reader(tmp_path, capsys):
    """1 clip: every query ranks its only candidate first (every metric 100) and no paired test can run; refused
    where the manifest is read (it was a traceback from the t-test)."""
    one = make_synthetic_run(tmp_path / "saved" / "exp" / "one", {"val": 20, "test": 1})
    other = make_synthetic_run(tmp_path / "saved" / "exp" / "other", {"val": 20, "test": 1}, seed=4)
    needles = ["1 clip in clip_ids", one / "sims" / "test.json"]
    for main, argv in ((FUSION, ["--run", one, *FAST_FUSION]), (FUSION, ["--runs", one, other, *FAST_FUSION]),
                       (QPP, ["--run", one, *FAST_QPP]),
                       (FUSION, ["--sims", one / "sims" / "test.npy", *FAST_FUSION])):
        refuse(main, argv, needles, tmp_path, capsys)


@pytest.mark.parametrize("shape", [(0, 0), (5, 0), (0, 5), (0, 1), (1, 0), (5, 1)])
def test_empty_or_one_column_bare_matrices_are_refused(tmp_path, capsys, shape):
    path = tmp_path / "m.npy"
    np.save(path, np.zeros(shape, np.float32))
    needle = "empty matrix" if 0 in shape else "1 clip"
    refuse(FUSION, ["--sims", path, *FAST_FUSION], [needle, path], tmp_path, capsys)


def test_a_two_clip_split_still_runs_with_its_significance(tmp_path, capsys):
    run = make_synthetic_run(tmp_path / "two", {"val": 20, "test": 2})
    assert run_cli(FUSION, ["--run", str(run), *FAST_FUSION]) == 0
    res = json.loads((run / "fusion" / "results.json").read_text())
    assert res["queries"] == 2 and "rrf" in res["significance"]["vs_combsum"]


# ------------------------------------------------------------------------------------------------ item 8: manifests
def _edit_manifest(run: Path, change) -> Path:
    """A run whose test manifest was written so (recorded afterwards: the manifest checks are what refuses it)."""
    man = json.loads((run / "sims" / "test.json").read_text())
    change(man)
    write_json(run / "sims" / "test.json", man)
    write_run_record(run, "tests")
    return run


def _set(key, value):
    return lambda m: m.__setitem__(key, value(m) if callable(value) else value)


def _set_qrel(value):
    return lambda m: m["qrels"].__setitem__(m["query_ids"][3], value(m) if callable(value) else value)


MANIFEST_CASES = {
    "qrels-string": (_set_qrel(lambda m: m["clip_ids"][0]), ["qrels of query 'clip0000.wav#3'", "list of clip ids"]),
    "qrels-int": (_set_qrel(7), ["qrels of query 'clip0000.wav#3'", "list of clip ids"]),
    "qrels-list-of-int": (_set_qrel([0]), ["qrels of query 'clip0000.wav#3'", "list of clip ids"]),
    "qrels-dict": (_set_qrel(lambda m: {m["clip_ids"][0]: 1}), ["qrels of query", "list of clip ids"]),
    "qrels-two": (_set_qrel(lambda m: m["clip_ids"][:2]), ["has 2 relevant clips"]),
    "qrels-other-clip": (_set_qrel(lambda m: [m["clip_ids"][1]]),
                         ["clip 'clip0000.wav' is the relevant clip of 4 queries", "captions_per_clip is 5"]),
    "qrels-not-a-dict": (_set("qrels", []), ["'qrels' must be an object"]),
    "k-string": (_set("captions_per_clip", "5"), ["'captions_per_clip' must be a positive integer, got '5'"]),
    "k-zero": (_set("captions_per_clip", 0), ["'captions_per_clip' must be a positive integer, got 0"]),
    "k-negative": (_set("captions_per_clip", -5), ["'captions_per_clip'", "got -5"]),
    "k-float": (_set("captions_per_clip", 5.0), ["'captions_per_clip'", "got 5.0"]),
    "k-bool": (_set("captions_per_clip", True), ["'captions_per_clip'", "got True"]),
    "k-null": (_set("captions_per_clip", None), ["'captions_per_clip'", "got None"]),
    "k-4": (_set("captions_per_clip", 4), ["captions_per_clip 4", "30 query_ids for 6 clips", "expected 24"]),
    "k-6": (_set("captions_per_clip", 6), ["captions_per_clip 6", "expected 36"]),
    "captions-short": (_set("captions", lambda m: m["captions"][:-3]), ["27 captions for 30 query rows"]),
    "captions-long": (_set("captions", lambda m: m["captions"] + ["x"]), ["31 captions for 30 query rows"]),
    "captions-one": (_set("captions", ["only one"]), ["1 captions for 30 query rows"]),
    "captions-not-str": (_set("captions", lambda m: [1] * len(m["captions"])), ["'captions' must be a list of strings"]),
    "clip-ids-int": (_set("clip_ids", lambda m: list(range(len(m["clip_ids"])))), ["'clip_ids' must be a list"]),
    "query-ids-str": (_set("query_ids", "abc"), ["'query_ids' must be a list of strings, got str"]),
    "source-list": (_set("source", []), ["'source' must be an object"]),
    "split-int": (_set("split", 3), ["'split' must be a string"]),
}


@pytest.mark.parametrize("case", list(MANIFEST_CASES))
@pytest.mark.parametrize("reader", ["fusion-run", "fusion-sims", "fusion-runs", "qpp-run"])
def test_bad_manifest_values_are_refused_naming_the_manifest_and_key(tmp_path, capsys, case, reader):
    change, needles = MANIFEST_CASES[case]
    run = _edit_manifest(_run(tmp_path, "bad"), change)
    good = _run(tmp_path, "good", seed=1)
    argv = {"fusion-run": (FUSION, ["--run", run, *FAST_FUSION]),
            "fusion-sims": (FUSION, ["--sims", run / "sims" / "test.npy", *FAST_FUSION]),
            "fusion-runs": (FUSION, ["--runs", good, run, *FAST_FUSION]),
            "qpp-run": (QPP, ["--run", run, *FAST_QPP])}[reader]
    refuse(*argv, [*needles, run / "sims" / "test.json"], tmp_path, capsys)


NOT_NPY = {
    "text": b"0.1 0.2\n0.3 0.4\n",
    "csv": b"0,1\n0.5,0.25\n",
    "empty": b"",
    "json": b'{"a": 1}',
    "pickle": b"\x80\x04\x95\x10\x00\x00\x00\x00\x00\x00\x00]\x94(K\x01K\x02e.",
    "zip": b"PK\x03\x04" + bytes(40),
    "truncated": b"\x93NUMPY\x01\x00v\x00{'descr': '<f4', 'fortran_order': False, 'shape': (30, 6), }",
}


@pytest.mark.parametrize("content", list(NOT_NPY))
@pytest.mark.parametrize("slot", ["sims", "weights"])
def test_a_file_named_npy_that_is_not_one_is_named(tmp_path, capsys, content, slot):
    path = tmp_path / "x.npy"
    path.write_bytes(NOT_NPY[content])
    run = _run(tmp_path)
    argv = ["--sims", path] if slot == "sims" else ["--run", run, "--weights", path]
    line = refuse(FUSION, [*argv, *FAST_FUSION], [path], tmp_path, capsys)
    assert ("not a NumPy .npy file" if content != "truncated" else "not a readable .npy array") in line
    assert "pickle" not in line


def _weights(n_rows: int, zero_clips, k: int = 5, base=1.0):
    w = np.full(n_rows, base, np.float64)
    for c in zero_clips:
        w[c * k:(c + 1) * k] = 0.0
    return w


@pytest.mark.parametrize("zero_clips, base, first", [
    ([0], 1.0, "clip0000.wav"), ([3], 1.0, "clip0003.wav"), ([5], 0.5, "clip0005.wav"),
    ([2, 4], 1.0, "clip0002.wav"), (range(6), 1.0, "clip0000.wav"), ([1], 1e-50, "clip0000.wav"),
])
def test_weights_that_are_all_zero_for_a_clip_are_refused(tmp_path, capsys, zero_clips, base, first):
    """1e-50 underflows to 0 in the float32 the kernels use: every clip's weights vanish."""
    run = _run(tmp_path)
    path = tmp_path / "w.npy"
    np.save(path, _weights(30, zero_clips, base=base))
    refuse(FUSION, ["--run", run, "--weights", path, *FAST_FUSION], [path, f"clip {first!r}", "is 0"], tmp_path,
           capsys)


def test_weights_zero_for_some_captions_only_are_fine(tmp_path, capsys):
    run = _run(tmp_path)
    w = np.ones(30)
    w[::5] = 0.0  # caption 0 of every clip off: the other four still rank
    np.save(tmp_path / "w.npy", w)
    assert run_cli(FUSION, ["--run", str(run), "--weights", str(tmp_path / "w.npy"), "--methods", "weighted_combsum",
                            *FAST_FUSION]) == 0


# ------------------------------------------------------------------------------------------------ item 7: copies
def _copy_tree(run: Path, dst: Path) -> Path:
    shutil.copytree(run, dst)
    return dst


def _resave(run: Path, dst: Path) -> Path:
    """Same values, other bytes: a float64 .npy of the same matrix, its own manifest and record."""
    from retrieval.sims_io import load_sims, save_sims

    dst.mkdir(parents=True)
    for split in ("val", "test"):
        sims, man = load_sims(run, split, mmap=False)
        man.source = {"copied": True}
        save_sims(dst / "sims", split, sims, man)
        np.save(dst / "sims" / f"{split}.npy", np.asarray(sims, np.float64))
    write_run_record(dst, "tests")
    write_json(dst / "metrics.json", {})
    return dst


@pytest.mark.parametrize("how", ["copytree", "resaved", "symlink", "file-copy", "third-of-three"])
def test_the_same_system_under_two_paths_is_refused(tmp_path, capsys, how):
    from tests.sysfusion_helpers import three_systems

    a, other, _ = three_systems(tmp_path / "saved", n=12)
    copy = tmp_path / "elsewhere" / "copyA"  # the audit: cp -r RUN /tmp/copyA
    if how == "copytree":
        argv = [a, _copy_tree(a, copy)]
    elif how == "resaved":
        argv = [a, _resave(a, copy)]
    elif how == "symlink":  # the resolved paths differ from the copy's; the link itself names a
        link = tmp_path / "link"
        link.symlink_to(a)
        argv = [link, _copy_tree(a, copy)]
    elif how == "file-copy":
        d = tmp_path / "files"
        d.mkdir()
        for ext in (".npy", ".json"):
            shutil.copy(a / "sims" / f"test{ext}", d / f"one{ext}")
            shutil.copy(a / "sims" / f"test{ext}", d / f"two{ext}")
        argv = [d / "one.npy", d / "two.npy"]
    else:
        argv = [a, other, _copy_tree(a, copy)]
    refuse(FUSION, ["--runs", *argv, *FAST_FUSION], ["holds the same similarity matrix", argv[-1], argv[0]],
           tmp_path, capsys)


def test_two_genuine_systems_still_fuse(tmp_path, capsys):
    from tests.sysfusion_helpers import three_systems

    a, b, _ = three_systems(tmp_path / "saved", n=12)
    out = tmp_path / "out"
    assert run_cli(FUSION, ["--runs", str(a), str(b), "--out", str(out), *FAST_FUSION]) == 0
    assert (out / "results.json").is_file()


@pytest.mark.parametrize("a, b, equal", [
    (np.arange(12.0).reshape(4, 3), np.arange(12.0).reshape(4, 3).astype(np.float32), True),  # float64 re-save
    (np.arange(12.0).reshape(4, 3), np.arange(12.0).reshape(3, 4), False),
    (np.zeros((50, 3)), np.concatenate([np.zeros((49, 3)), np.ones((1, 3))]), False),  # differs in the last block
    (np.zeros((50, 3)), np.zeros((50, 3)), True),
])
def test_same_matrix_compares_values_block_by_block(a, b, equal):
    from retrieval.sims_io import same_matrix

    assert same_matrix(a, b, block_bytes=48) is equal  # 2-row blocks
    assert same_matrix(a, b) is equal


def test_config_readers_pick_only_runs_of_their_own_config_file(tmp_path):
    """p1/same/exp.json and p2/same/exp.json share the experiment folder 'same-exp': fusion.py --config p1/... fused
    p2's newer run (a MoEE run read as the CE one)."""
    from utils.errors import UserError as Refused
    from utils.paths import newest_run_of_config

    cfgs = []
    for parent in ("p1", "p2"):
        cfg = tmp_path / parent / "same" / "exp.json"
        cfg.parent.mkdir(parents=True)
        cfg.write_text(json.dumps({"inherit_from": str(TINY), "trainer": {"save_dir": str(tmp_path / "saved")}}))
        cfgs.append(cfg)
    exp = tmp_path / "saved" / "same-exp"
    runs = [("2026-01-01_00-00-00_seed-0", cfgs[0]), ("2026-01-02_00-00-00_seed-0", cfgs[1])]
    for i, (name, cfg) in enumerate(runs):
        run = exp / name
        run.mkdir(parents=True)
        (run / "run.json").write_text(json.dumps({"threads": 1, "config_file": str(cfg.resolve())}))
        (run / "metrics.json").write_text("{}")
        os.utime(run / "metrics.json", (1e9 + i, 1e9 + i))
    assert newest_run_of_config(cfgs[1]).name == "2026-01-02_00-00-00_seed-0"
    assert newest_run_of_config(cfgs[0]).name == "2026-01-01_00-00-00_seed-0"  # not p2's newer run
    shutil.rmtree(exp / "2026-01-01_00-00-00_seed-0")
    with pytest.raises(Refused, match=r"no complete run of .*p1/same/exp.json: the newest, .* was trained from"):
        newest_run_of_config(cfgs[0])
