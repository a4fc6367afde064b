"""fusion.py end to end on synthetic runs: outputs, --legacy-weights, and every bad input (exit 2, one line)."""
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import fusion as _pkg  # noqa: F401  (the package; the script is loaded below by path)
from retrieval.sims_io import build_manifest, load_sims, save_sims
from utils.errors import run_cli
from utils.outputs import output_set, write_run_record

ROOT = Path(__file__).resolve().parents[1]
N, K = 12, 5


def _script_main():
    import importlib.util
    spec = importlib.util.spec_from_file_location("fusion_script", ROOT / "fusion.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.main


MAIN = _script_main()


def _sims(seed=0):
    rng = np.random.default_rng(seed)
    clip = rng.standard_normal((N, 8))
    caps = np.repeat(clip, K, 0) + 2.0 * rng.standard_normal((N * K, 8))
    return (caps @ clip.T / 8).astype(np.float32)


@pytest.fixture
def run_dir(tmp_path):
    run = tmp_path / "saved" / "tiny-x" / "2026-01-01_00-00-00_seed-0"
    save_sims(run / "sims", "test", _sims(), build_manifest("test", [f"clip {i}.wav" for i in range(N)], None, {}, K))
    write_run_record(run, "tests")
    (run / "metrics.json").write_text("{}")
    return run


def _cli(argv, capsys):
    rc = run_cli(MAIN, argv)
    return rc, capsys.readouterr()


def test_run_writes_contract_files(run_dir, capsys):
    rc, cap = _cli(["--run", str(run_dir), "--resamples", "200", "--quiet", "--no-plot"], capsys)
    assert rc == 0, cap.err
    out = run_dir / "fusion"
    res = json.loads((out / "results.json").read_text())
    assert res["queries"] == N and set(res["methods"]) == {"combsum", "combmnz", "combmax", "combmin", "combmed",
                                                           "rrf", "borda", "isr"}  # no weights -> no weighted
    assert res["baseline_per_caption"]["R1"] >= 0 and "rrf" in res["significance"]["vs_combsum"]
    fused, manifest = load_sims(out / "combsum.npy")
    np.testing.assert_allclose(fused, _sims().reshape(N, K, N).sum(1), rtol=1e-5)
    assert manifest.query_ids == manifest.clip_ids
    assert len((out / "rrf.trec").read_text().splitlines()) == N * N  # depth 100 > N
    assert (out / "qrels.trec").is_file() and (out / "results.md").is_file()


def test_out_naming_a_run_folder_or_another_stages_output_is_refused(run_dir, tmp_path, capsys):
    """docs/FORMATS.md: --out must be absent or a previous output set of the same kind. A training run folder and
    qpp.py's output carry a complete.json too; fusion.py replaced them whole (the run's checkpoint deleted)."""
    other_run = tmp_path / "saved" / "tiny-x" / "2026-01-02_00-00-00_seed-0"
    shutil.copytree(run_dir, other_run)
    before = sorted(p.name for p in other_run.iterdir())
    argv = ["--run", str(run_dir), "--resamples", "20", "--quiet", "--no-plot", "--out"]
    rc, cap = _cli(argv + [str(other_run)], capsys)
    assert rc == 2 and cap.err.count("\n") == 1 and str(other_run) in cap.err and "tests" in cap.err, cap.err
    assert sorted(p.name for p in other_run.iterdir()) == before
    qpp_out = tmp_path / "qpp-out"
    with output_set(qpp_out, writer="qpp.py") as tmp:
        (tmp / "weights.npy").write_bytes(b"w")
    rc, cap = _cli(argv + [str(qpp_out)], capsys)
    assert rc == 2 and "qpp.py" in cap.err and (qpp_out / "weights.npy").read_bytes() == b"w", cap.err
    for _ in range(2):  # new, then its own previous output set, which it replaces
        rc, cap = _cli(argv + [str(tmp_path / "f")], capsys)
        assert rc == 0, cap.err


def test_config_newest_run_and_plot(run_dir, tmp_path, capsys):
    cfg = tmp_path / "tiny" / "x.json"
    cfg.parent.mkdir()
    cfg.write_text(json.dumps({"inherit_from": str(ROOT / "configs" / "clotho-synthetic" / "tiny-ce.json"),
                               "trainer": {"save_dir": str(tmp_path / "saved")}}))
    rc, cap = _cli(["--config", str(cfg), "--eval_from_training_config", "--device", "cpu", "--methods",
                    "combsum,rrf", "--resamples", "100"], capsys)
    assert rc == 0, cap.err
    assert (run_dir / "fusion" / "methods.png").stat().st_size > 10_000
    assert "combsum" in cap.out and "oracle" in cap.out


def test_legacy_weights_invert_the_quality(run_dir, capsys):
    ranks = np.tile([1, 2, 3, 4, 5], N)  # caption 0 predicted best
    np.save(run_dir / "ranks.npy", ranks)
    rc, cap = _cli(["--run", str(run_dir), "--methods", "weighted_combsum", "--weights", str(run_dir / "ranks.npy"),
                    "--legacy-weights", "--quiet", "--no-plot", "--resamples", "50"], capsys)
    assert rc == 0, cap.err
    fused = np.load(run_dir / "fusion" / "weighted_combsum.npy")
    w = np.array([1, 2, 3, 4, 5]) / 15  # predicted-best caption gets the smallest weight
    np.testing.assert_allclose(fused, np.einsum("k,ikn->in", w, _sims().reshape(N, K, N)), rtol=1e-5)


def test_qpp_weights_picked_up_automatically(run_dir, capsys):
    (run_dir / "qpp").mkdir()
    np.save(run_dir / "qpp" / "weights.npy", np.ones(N * K))
    from utils.outputs import write_record
    write_record(run_dir / "qpp", "test")  # a complete qpp output set (fusion refuses unfinished ones)
    rc, cap = _cli(["--run", str(run_dir), "--quiet", "--no-plot", "--resamples", "50"], capsys)
    assert rc == 0, cap.err
    fused = np.load(run_dir / "fusion" / "weighted_combsum.npy")
    np.testing.assert_allclose(fused, np.load(run_dir / "fusion" / "combsum.npy"), rtol=1e-6)


def test_qpp_weights_of_the_test_split_are_not_applied_to_val(run_dir, capsys):
    """qpp.py weights the test split; `fusion.py --split val` on such a run refused the weights' query ids."""
    save_sims(run_dir / "sims", "val", _sims(), build_manifest("val", [f"val {i}.wav" for i in range(N)], None, {}, K))
    write_run_record(run_dir, "tests")  # the run as train.py leaves it with val dumped too
    (run_dir / "qpp").mkdir()
    np.save(run_dir / "qpp" / "weights.npy", np.ones(N * K))
    (run_dir / "qpp" / "weights.json").write_text(json.dumps({"split": "test"}))
    from utils.outputs import write_record
    write_record(run_dir / "qpp", "test")
    rc, cap = _cli(["--run", str(run_dir), "--split", "val", "--quiet", "--no-plot", "--resamples", "50"], capsys)
    assert rc == 0, cap.err
    assert "weights the test split; the val split is fused without weights" in cap.err
    res = json.loads((run_dir / "fusion-val" / "results.json").read_text())
    assert "weighted_combsum" not in res["methods"]


def test_fork_csv_input(tmp_path, capsys):
    pd.DataFrame(_sims()).to_csv(tmp_path / "sim_mat_test.csv", index=False)
    rc, cap = _cli(["--sims", str(tmp_path / "sim_mat_test.csv"), "--methods", "combsum", "--quiet", "--no-plot",
                    "--resamples", "50"], capsys)
    assert rc == 0, cap.err
    assert (tmp_path / "sim_mat_test-fusion" / "combsum.trec").is_file()


def _bad_inputs(run_dir: Path, tmp: Path):
    sims = _sims()
    nan = sims.copy()
    nan[3, 4] = np.nan
    np.save(tmp / "nan.npy", nan)
    np.save(tmp / "odd.npy", sims[:-1])
    np.save(tmp / "w_short.npy", np.ones(N * K - 1))
    np.save(tmp / "w_nan.npy", np.full(N * K, np.nan))
    np.save(tmp / "w_quality.npy", np.linspace(0, 1, N * K))
    bad_manifest = tmp / "m"
    save_sims(bad_manifest, "test", sims, build_manifest("test", [str(i) for i in range(N)], None, {}, K))
    np.save(bad_manifest / "test.npy", sims[:, :-1])  # matrix no longer agrees with its manifest
    run = ["--run", str(run_dir)]
    return {
        "no input": [],
        "two inputs": run + ["--sims", str(tmp / "nan.npy")],
        "missing file": ["--sims", str(tmp / "nope.npy")],
        "nan": ["--sims", str(tmp / "nan.npy")],
        "rows not K x cols": ["--sims", str(tmp / "odd.npy")],
        "manifest disagrees": ["--sims", str(bad_manifest / "test.npy")],
        "bad K for manifest": ["--sims", str(bad_manifest / "test.npy"), "--captions_per_clip", "3"],
        "K with run": run + ["--captions_per_clip", "5"],
        "no run": ["--run", str(tmp / "nowhere")],
        "split not dumped": run + ["--split", "val"],
        "method": run + ["--methods", "combsum,nosuch"],
        "norm": run + ["--norm", "l2"],
        "depth": run + ["--depth", "0"],
        "weights shape": run + ["--weights", str(tmp / "w_short.npy")],
        "weights nan": run + ["--weights", str(tmp / "w_nan.npy")],
        "legacy not ranks": run + ["--weights", str(tmp / "w_quality.npy"), "--legacy-weights"],
        "weighted without weights": run + ["--methods", "weighted_combsum"],
        "device": run + ["--device", "tpu"],
        "unknown flag": run + ["--frobnicate"],
        "flag without config": ["--eval_from_training_config"],
    }


def test_every_bad_input_exits_2_with_one_line_and_writes_nothing(run_dir, tmp_path, capsys):
    tmp = tmp_path / "bad"
    tmp.mkdir()
    cases = _bad_inputs(run_dir, tmp)
    before = sorted(p for p in tmp_path.rglob("*"))
    for name, argv in cases.items():
        rc, cap = _cli(argv + ["--quiet"], capsys)
        lines = cap.err.strip().splitlines()
        assert rc == 2, (name, cap.err)
        assert len(lines) == 1 and lines[0].startswith("error: "), (name, cap.err)
    assert sorted(p for p in tmp_path.rglob("*")) == before  # nothing written anywhere
    assert not (run_dir / "fusion").exists()


def test_help_explains_every_flag(capsys):
    with pytest.raises(SystemExit) as exc:
        MAIN(["--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for flag in ["--config", "--run", "--sims", "--captions_per_clip", "--split", "--out", "--methods", "--norm",
                 "--depth", "--rrf_k", "--weights", "--legacy-weights", "--trec-depth", "--device", "--resamples"]:
        assert flag in text
