"""Fusion of systems (fusion.py --runs): kernels, a known outcome, weights learned on val only, identity checks."""
from __future__ import annotations

import errno
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from fusion.run import build_parser, main_from_args
from fusion.systems import fuse_systems, simplex_grid
from retrieval.metrics import gt_ranks_t2a, metrics_from_ranks
from retrieval.sims_io import load_sims, save_sims
from utils.errors import run_cli
from utils.outputs import require_complete, write_run_record

from sysfusion_helpers import make_run, three_systems


def _cli(argv):
    return run_cli(lambda a: main_from_args(build_parser().parse_args(a)), argv)


def _minmax(x):
    lo, hi = x.min(axis=1, keepdims=True), x.max(axis=1, keepdims=True)
    return (x - lo) / (hi - lo)


def test_fuse_systems_equals_the_formulas():
    rng = np.random.default_rng(0)
    mats = [rng.normal(size=(12, 7)).astype(np.float32) for _ in range(3)]
    assert np.allclose(fuse_systems("combsum", mats, norm="min-max"), sum(_minmax(m) for m in mats), atol=1e-6)
    w = np.array([0.5, 0.3, 0.2])
    assert np.allclose(fuse_systems("weighted_combsum", mats, norm="min-max", weights=w),
                       sum(wi * _minmax(m) for wi, m in zip(w, mats)), atol=1e-6)
    ranks = [np.argsort(np.argsort(-m, axis=1, kind="stable"), axis=1) + 1 for m in mats]
    assert np.allclose(fuse_systems("rrf", mats, norm="none", params={"k": 60}), sum(1 / (60 + r) for r in ranks))
    # the torch backend (--device N on a GPU) runs the same kernels: checked here through torch on the CPU
    for method in ("weighted_combsum", "rrf", "combmnz"):
        a = fuse_systems(method, mats, norm="min-max", weights=w if method == "weighted_combsum" else None)
        b = fuse_systems(method, mats, norm="min-max", weights=w if method == "weighted_combsum" else None,
                         device="torch:cpu")
        assert np.allclose(a, b, atol=1e-6), method


def test_simplex_grid():
    g = simplex_grid(3, 0.1)
    assert g.shape == (66, 3) and np.allclose(g.sum(axis=1), 1) and len({tuple(r) for r in g.round(6)}) == 66
    assert np.allclose(g[0], [0.4, 0.3, 0.3])  # closest to equal weights first (ties -> nearer CombSum)
    assert simplex_grid(2, 0.25).tolist() == [[0.5, 0.5], [0.75, 0.25], [0.25, 0.75], [1.0, 0.0], [0.0, 1.0]]


def _complementary(n=4, k=2):
    """System A finds clips 0..n/2-1 and is fooled by a decoy on the others; system B the other way round."""
    out = []
    for good_half in (0, 1):
        sims = np.zeros((n * k, n), dtype=np.float32)
        for i in range(n):
            for c in range(k):
                row = sims[i * k + c]
                row[:] = np.linspace(0.0, 0.1, n)
                decoy = (i + 1) % n
                if (i < n // 2) == (good_half == 0):
                    row[i], row[decoy] = 1.0, 0.2
                else:
                    row[i], row[decoy] = 0.6, 1.0
        out.append(sims)
    return out


def test_complementary_systems_known_outcome(tmp_path):
    a, b = _complementary()
    runs = [make_run(tmp_path, name, {"val": s, "test": s}, 2) for name, s in (("A", a), ("B", b))]
    out = tmp_path / "out"
    assert _cli(["--runs", *map(str, runs), "--out", str(out), "--systems-methods", "combsum,weighted_combsum",
                 "--resamples", "200", "--quiet", "--no-plot"]) == 0
    res = json.loads((out / "results.json").read_text())
    rows = res["caption_queries"]["rows"]
    assert rows["A"]["metrics"]["R1"] == 50.0 and rows["B"]["metrics"]["R1"] == 50.0
    assert rows["fusion: combsum"]["metrics"]["R1"] == 100.0
    assert res["weights"]["weights"] == {"A": 0.5, "B": 0.5}  # equal weights win the tie on val
    assert rows["fusion: weighted_combsum"]["metrics"]["R1"] == 100.0
    rr = res["caption_queries"]["risk_reward"]["fusion: combsum"]
    assert (rr["wins"], rr["losses"], rr["ties"]) == (2, 0, 2)  # clips: 2 fixed, 2 already right
    assert res["clip_queries"]["rows"]["fusion: combsum"]["metrics"]["R1"] == 100.0
    assert "| fusion: combsum | system fusion | 8 | 100.00 [100.00, 100.00]" in (out / "results.md").read_text()


def test_weights_are_learned_on_val_and_applied_on_test(tmp_path):
    """'noise' is pure noise on val and PERFECT on test: a val-learned weight must give it nothing."""
    weights = {}
    for perfect in (False, True):
        root = tmp_path / str(perfect)
        runs = three_systems(root, noise_perfect_on_test=perfect)
        out = root / "out"
        assert _cli(["--runs", *map(str, runs), "--out", str(out), "--resamples", "200", "--quiet"]) == 0
        res = json.loads((out / "results.json").read_text())
        weights[perfect] = res["weights"]["weights"]
        assert res["weights"]["fit_split"] == "val" and res["best_single"] == {
            "name": "good", "selected_on": "val", "val_mAP10": res["best_single"]["val_mAP10"]}
        for name in ("results.md", "weights.json", "risk-reward.png", "systems-weighted_combsum.npy"):
            assert (out / name).is_file(), name
        # the reported test row is the val-learned weights applied to the test sims
        test = [load_sims(r, "test")[0] for r in runs]
        gt = load_sims(runs[0], "test")[1].gt_cols()
        w = np.array([weights[perfect][n] for n in ("good", "fair", "noise")])
        expect = metrics_from_ranks(gt_ranks_t2a(fuse_systems("weighted_combsum", test, norm="min-max", weights=w), gt))
        assert res["caption_queries"]["rows"]["fusion: weighted_combsum"]["metrics"] == pytest.approx(expect)
        assert res["weights"]["val_mAP10"] >= res["weights"]["val_mAP10_equal_weights"]
    assert weights[False] == weights[True]  # test never influences the weights
    assert weights[True]["noise"] == 0.0 and weights[True]["good"] > weights[True]["fair"]
    sig = res["caption_queries"]["significance"]
    assert set(sig) == {"fair", "noise"} | {f"fusion: {m}" for m in ("combsum", "combmnz", "combmax", "combmin",
                                                                     "combmed", "rrf", "borda", "isr",
                                                                     "weighted_combsum")}
    assert all(0 < s["p_t_holm"] <= 1 and s["p_randomisation_holm"] >= s["p_randomisation"] for s in sig.values())


@pytest.fixture
def two_runs(tmp_path):
    runs = three_systems(tmp_path, n=12)[:2]
    return tmp_path, runs


def test_identity_checks_reject_mismatched_runs(two_runs, capsys):
    root, (a, b) = two_runs
    out = root / "out"
    args = ["--out", str(out), "--quiet", "--resamples", "50"]
    # same run twice
    assert _cli(["--runs", str(a), str(a), *args]) == 2 and not out.exists()
    assert "given twice" in capsys.readouterr().err
    # same shape, clips in another column order
    sims, man = load_sims(b, "test", mmap=False)
    order = np.roll(np.arange(len(man.clip_ids)), 1)
    man.clip_ids = [man.clip_ids[j] for j in order]
    save_sims(b / "sims", "test", np.ascontiguousarray(sims[:, order]), man)
    write_run_record(b, "tests")  # a run written so, not edited after its record
    assert _cli(["--runs", str(a), str(b), *args]) == 2 and not out.exists()
    assert "clip ids (columns) differ at position 0" in capsys.readouterr().err
    # same ids, other caption texts (another data set)
    sims, man = load_sims(a, "test", mmap=False)
    man.captions = [c + " (other)" for c in man.captions]
    c = root / "c" / "run"
    shutil.copytree(a, c)
    save_sims(c / "sims", "test", sims, man)
    write_run_record(c, "tests")  # a run written so, not edited after its record
    assert _cli(["--runs", str(a), str(c), *args]) == 2 and not out.exists()
    assert "captions differ" in capsys.readouterr().err
    # another split
    assert _cli(["--runs", str(a / "sims" / "test.npy"), str(a / "sims" / "val.npy"), *args]) == 2
    assert "split 'val' differs from 'test'" in capsys.readouterr().err and not out.exists()
    # modes do not mix
    assert _cli(["--runs", str(a), str(b), "--run", str(a), *args]) == 2 and not out.exists()
    assert _cli(["--runs", str(a), *args]) == 2  # one system is not a fusion


def test_val_runs_must_come_from_the_same_model(two_runs, capsys):
    root, (a, b) = two_runs
    out = root / "out"
    # --val-runs in the wrong order: each system's val comes from the other model
    assert _cli(["--runs", str(a / "sims" / "test.npy"), str(b / "sims" / "test.npy"),
                 "--val-runs", str(b / "sims" / "val.npy"), str(a / "sims" / "val.npy"), "--out", str(out)]) == 2
    assert "must come from the same model" in capsys.readouterr().err and not out.exists()
    assert _cli(["--runs", str(a / "sims" / "test.npy"), str(b / "sims" / "test.npy"),
                 "--val-runs", str(a / "sims" / "val.npy"), str(b / "sims" / "val.npy"), "--out", str(out),
                 "--quiet", "--no-plot", "--resamples", "20", "--systems-methods", "weighted_combsum"]) == 0


def test_a_weight_of_one_reproduces_the_single_system_in_both_parts(tmp_path):
    runs = three_systems(tmp_path, n=30)
    out = tmp_path / "out"
    assert _cli(["--runs", str(runs[0]), str(runs[2]), "--out", str(out), "--systems-methods", "weighted_combsum",
                 "--quiet", "--no-plot", "--resamples", "50"]) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["weights"]["weights"] == {"good": 1.0, "noise": 0.0}
    for part in ("caption_queries", "clip_queries"):
        rows = res[part]["rows"]
        assert rows["fusion: weighted_combsum"]["metrics"] == rows["good"]["metrics"], part
        rr = res[part]["risk_reward"]["fusion: weighted_combsum"]
        assert rr["ties"] == 30 and rr["wins"] == rr["losses"] == 0


# ------------------------------------------------------------------------------------------------ output set
SET_FILES = {"results.json", "results.md", "weights.json", "risk-reward.png", "systems-weighted_combsum.npy",
             "systems-weighted_combsum.json"}


def _state(out):
    return {rel: e["sha256"] for rel, e in require_complete(out)["files"].items()}


def test_output_is_a_complete_output_set_that_readers_verify(tmp_path, capsys):
    runs = three_systems(tmp_path, n=12)
    out = tmp_path / "sf"
    assert _cli(["--runs", *map(str, runs), "--out", str(out), "--resamples", "20", "--quiet"]) == 0
    record = require_complete(out, sorted(SET_FILES))
    assert record["writer"] == "fusion.py --runs" and set(record["files"]) == SET_FILES
    assert {p.name for p in out.iterdir()} == SET_FILES | {"complete.json"}
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporaries beside it
    fused = out / "systems-weighted_combsum.npy"  # a recorded matrix: fusion.py --sims reads it, checked
    assert _cli(["--sims", str(fused), "--out", str(tmp_path / "f"), "--quiet", "--no-plot", "--resamples", "20"]) == 0
    sims, man = load_sims(fused, mmap=False)
    save_sims(out, "systems-weighted_combsum", sims[::-1].copy(), man)  # changed after the set was completed
    capsys.readouterr()
    assert _cli(["--sims", str(fused), "--out", str(tmp_path / "g"), "--quiet", "--no-plot"]) == 2
    assert "changed since its output set was completed" in capsys.readouterr().err
    assert not (tmp_path / "g").exists()


@pytest.mark.parametrize("error", [RuntimeError("a bug"), OSError(errno.ENOSPC, "No space left on device")],
                         ids=["bug", "disk-full"])
@pytest.mark.parametrize("fail_in", ["plot", "report"])
def test_a_failure_midway_leaves_nothing_and_a_rerun_succeeds(tmp_path, monkeypatch, capsys, error, fail_in):
    import fusion.plot
    import fusion.system_report

    runs = three_systems(tmp_path / "runs", n=12)
    out = tmp_path / "fused" / "sf"
    argv = ["--runs", *map(str, runs), "--out", str(out), "--resamples", "20", "--quiet"]
    seen = []

    def fail(path, *args, **kwargs):
        seen.extend(sorted(p.name for p in Path(path).parent.iterdir()))  # what was written before the failure
        raise error

    target = (fusion.plot, "plot_risk_reward") if fail_in == "plot" else (fusion.system_report, "write_markdown")
    monkeypatch.setattr(*target, fail)
    capsys.readouterr()
    if isinstance(error, OSError):
        assert _cli(argv) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and "No space left on device" in lines[0], lines
    else:
        with pytest.raises(RuntimeError, match="a bug"):
            _cli(argv)
    assert {"weights.json", "systems-weighted_combsum.npy"} <= set(seen)  # it did fail midway
    assert list((tmp_path / "fused").iterdir()) == []  # no half-written folder, no temporary
    monkeypatch.undo()
    assert _cli(argv) == 0 and set(_state(out)) == SET_FILES


def test_a_failed_rerun_keeps_the_complete_old_set(tmp_path, monkeypatch):
    import fusion.system_report

    runs = three_systems(tmp_path, n=12)
    out = tmp_path / "sf"
    argv = ["--runs", *map(str, runs), "--out", str(out), "--resamples", "20", "--quiet", "--no-plot"]
    assert _cli(argv) == 0
    old = _state(out)
    monkeypatch.setattr(fusion.system_report, "write_markdown", lambda *a, **k: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        _cli(argv + ["--systems-methods", "combsum"])
    assert _state(out) == old and json.loads((out / "results.json").read_text())["primary"] == \
        "fusion: weighted_combsum"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fair", "good", "noise", "sf"]


def test_out_must_be_new_or_a_previous_system_fusion(tmp_path, capsys):
    runs = three_systems(tmp_path, n=12)
    argv = ["--runs", *map(str, runs), "--resamples", "20", "--quiet", "--no-plot", "--out"]
    legacy = tmp_path / "legacy"  # a folder without complete.json (an older writer's, or the user's)
    legacy.mkdir()
    (legacy / "results.json").write_text("{}")
    afile = tmp_path / "a-file"
    afile.write_text("x")
    for out, needle in ((legacy, "not a complete output folder"), (afile, "exists and is not a folder")):
        capsys.readouterr()
        assert _cli(argv + [str(out)]) == 2
        assert needle in capsys.readouterr().err
    assert [p.name for p in legacy.iterdir()] == ["results.json"] and afile.read_text() == "x"


def test_simplex_grid_of_a_step_typed_slightly_above_one_over_n():
    """--weights-step 0.14285714286 passes the CLI check (7 whole steps) but 1 / step = 6.99999999993: the grid
    must still have 7 steps (8 points for 2 systems, reaching 0 and 1)."""
    from fusion.systems_cli import weights_step

    step = weights_step("0.14285714286")
    g = simplex_grid(2, step)
    assert g.shape == (8, 2) and [0.0, 1.0] in g.tolist() and [1.0, 0.0] in g.tolist()


def test_coordinate_ascent_returns_a_converged_coordinate_wise_optimum(monkeypatch):
    """With the val metric replaced by a known objective of the normalised weights, the coordinate search must
    return weights summing to 1 from which no single coordinate change on the 0..1 grid improves (it runs until
    a full round changes nothing; one round is not enough for this target)."""
    import fusion.systems as fs

    target = np.array([0.395, 0.593, 0.012])

    def objective(w):
        w = np.asarray(w, dtype=np.float64)
        return -float(((w / w.sum() - target) ** 2).sum())

    monkeypatch.setattr(fs, "fuse_systems", lambda method, val, *, norm, weights, device: np.asarray(weights, float))
    monkeypatch.setattr(fs, "gt_ranks_t2a", lambda fused, gt_cols: fused)
    monkeypatch.setattr(fs, "metrics_from_ranks", lambda w: {"mAP10": objective(w)})
    best_w, info = fs.learn_weights([None] * 3, None, norm="none", search="coordinate", step=0.1)
    assert info["search"] == "coordinate" and best_w.sum() == pytest.approx(1.0)
    assert info["val_mAP10"] == pytest.approx(objective(best_w)) and info["val_mAP10"] > objective(np.ones(3))
    grid = np.round(np.arange(0, 1.05, 0.1), 9)

    def converged(w):
        for i in range(3):
            for v in grid:
                cand = w.copy()
                cand[i] = v
                if cand.sum() > 0 and objective(cand) > objective(w) + 1e-9:
                    return False
        return True

    # the unnormalised weights the search stopped at: best_w times a scale putting every entry on the grid
    on_grid = [best_w * m / best_w.max() for m in grid[1:]]
    on_grid = [w for w in on_grid if np.allclose(w, np.round(w, 1), atol=1e-9)]
    assert on_grid and any(converged(np.round(w, 1)) for w in on_grid)


def test_caption_query_tests_use_the_mean_rr_of_each_clips_captions(tmp_path):
    """Part caption_queries: the unit of the tests and of risk-reward is the clip, its score the mean reciprocal
    rank of its K caption queries (not the best caption's)."""
    runs = three_systems(tmp_path, n=12, k=5)
    out = tmp_path / "out"
    assert _cli(["--runs", *map(str, runs), "--out", str(out), "--resamples", "100", "--quiet", "--no-plot",
                 "--systems-methods", "combsum"]) == 0
    res = json.loads((out / "results.json").read_text())["caption_queries"]
    assert res["baseline"] == "good"
    sims = {name: load_sims(r, "test")[0] for name, r in zip(("good", "fair", "noise"), runs)}
    gt = load_sims(runs[0], "test")[1].gt_cols()
    per_clip = {name: (1.0 / (gt_ranks_t2a(s, gt) + 1.0)).reshape(12, 5).mean(axis=1) for name, s in sims.items()}
    for name in ("fair", "noise"):
        d = per_clip[name] - per_clip["good"]
        assert res["significance"][name]["mean_diff"] == pytest.approx(d.mean(), rel=1e-12)
        assert res["risk_reward"][name]["queries"] == 12
        assert res["risk_reward"][name]["urisk"] == pytest.approx(np.where(d < 0, 2 * d, d).mean(), rel=1e-12)
