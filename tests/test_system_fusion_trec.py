"""TREC runs as input: fusion.py --runs a.trec b.trec --qrels ..., qpp.py --trec-run ..., and the densification."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import qpp as qpp_cli_pkg  # noqa: F401  (sets the OpenMP policy like qpp.py)
from fusion.run import build_parser, main_from_args
from fusion.trec_input import manifest_from_qrels, sims_from_trec_run
from qpp.synthetic_run import make_synthetic_run
from retrieval.sims_io import load_sims
from retrieval.trec import write_trec_qrels, write_trec_run
from utils.errors import run_cli

from sysfusion_helpers import three_systems

REPO = Path(__file__).resolve().parents[1]


def _fusion(argv):
    return run_cli(lambda a: main_from_args(build_parser().parse_args(a)), argv)


def _export(run, split, folder, depth=None):
    sims, man = load_sims(run, split)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{run.parent.name}-{split}.trec"
    write_trec_run(path, np.asarray(sims), man.query_ids, man.clip_ids, run.parent.name, depth or sims.shape[1])
    write_trec_qrels(folder / f"qrels-{split}.trec", man.qrels)
    return path


def test_trec_runs_fuse_exactly_like_their_matrices(tmp_path):
    runs = three_systems(tmp_path / "runs", n=20)
    common = ["--resamples", "200", "--quiet", "--no-plot", "--systems-methods", "combsum,rrf,weighted_combsum"]
    assert _fusion(["--runs", *map(str, runs), "--out", str(tmp_path / "from-sims"), *common]) == 0
    trec = tmp_path / "trec"
    test = [_export(r, "test", trec) for r in runs]
    val = [_export(r, "val", trec) for r in runs]
    assert _fusion(["--runs", *map(str, test), "--qrels", str(trec / "qrels-test.trec"), "--val-runs", *map(str, val),
                    "--val-qrels", str(trec / "qrels-val.trec"), "--names", "good,fair,noise",
                    "--out", str(tmp_path / "from-trec"), *common]) == 0
    a = json.loads((tmp_path / "from-sims" / "results.json").read_text())
    b = json.loads((tmp_path / "from-trec" / "results.json").read_text())
    assert a["weights"]["weights"] == b["weights"]["weights"]
    for part in ("caption_queries", "clip_queries"):
        assert {n: r["metrics"] for n, r in a[part]["rows"].items()} == {n: r["metrics"] for n, r in b[part]["rows"].items()}
    # a TREC run laid onto a run folder's manifest (no --qrels needed)
    assert _fusion(["--runs", str(runs[0]), str(test[1]), "--out", str(tmp_path / "mixed"), "--quiet", "--no-plot",
                    "--resamples", "50", "--systems-methods", "combsum"]) == 0


def test_truncated_trec_run_is_densified_below_its_lowest_score(tmp_path):
    runs = three_systems(tmp_path / "runs", n=10)
    path = _export(runs[0], "test", tmp_path, depth=3)
    man = manifest_from_qrels(tmp_path / "qrels-test.trec", "test")
    full, ref = load_sims(runs[0], "test")
    assert man.query_ids == ref.query_ids and man.clip_ids == ref.clip_ids and man.captions_per_clip == 5
    sims = sims_from_trec_run(path, man)
    top3 = -np.sort(-np.asarray(full), axis=1)[:, :3]
    assert np.array_equal(-np.sort(-sims, axis=1)[:, :3], top3)
    rest = -np.sort(-sims, axis=1)[:, 3:]
    assert np.all(rest == rest[:, :1]) and np.all(rest[:, 0] < top3[:, 2])


def test_bad_trec_input_is_one_line_exit_2(tmp_path, capsys):
    runs = three_systems(tmp_path / "runs", n=6)
    a, b = (_export(r, "test", tmp_path) for r in runs[:2])
    qrels = tmp_path / "qrels-test.trec"
    lines = a.read_text().splitlines()
    first_q = lines[0].split()[0]
    a.write_text("\n".join(x for x in lines if x.split()[0] != first_q) + "\n")
    out = tmp_path / "out"
    assert _fusion(["--runs", str(a), str(b), "--qrels", str(qrels), "--out", str(out), "--quiet"]) == 2
    assert f"no line for query {first_q!r}" in capsys.readouterr().err and not out.exists()
    assert _fusion(["--runs", str(a), str(b), "--out", str(out), "--quiet"]) == 2
    assert "needs --qrels" in capsys.readouterr().err
    c = _export(runs[2], "test", tmp_path)
    multi = tmp_path / "multi.trec"
    multi.write_text(qrels.read_text() + "test_clip000.wav#0 0 test_clip001.wav 1\n")
    assert _fusion(["--runs", str(b), str(c), "--qrels", str(multi), "--out", str(out), "--quiet"]) == 2
    assert "'test_clip000.wav#0' has 2 relevant clips" in capsys.readouterr().err and not out.exists()
    assert _fusion(["--runs", str(b), str(c), "--qrels", str(qrels), "--out", str(out), "--quiet", "--no-plot",
                    "--resamples", "20"]) == 0  # the same files are fine with the right qrels


def _qpp_main():
    """qpp.py's main (the script shares its name with the qpp package, so load it from its file)."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("qpp_cli", REPO / "qpp.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.main


def test_qpp_reads_trec_runs_like_the_run_folder(tmp_path):
    qpp_main = _qpp_main()

    run = make_synthetic_run(tmp_path / "run", {"val": 30, "test": 40})
    common = ["--features", "score,variation", "--models", "linear", "--n-resamples", "100", "--no-plots"]
    ref = qpp_main(["--run", str(run), "--out", str(tmp_path / "ref"), *common])
    test, val = _export(run, "test", tmp_path / "trec"), _export(run, "val", tmp_path / "trec")
    got = qpp_main(["--trec-run", str(test), "--qrels", str(tmp_path / "trec" / "qrels-test.trec"),
                    "--fit-trec-run", str(val), "--fit-qrels", str(tmp_path / "trec" / "qrels-val.trec"),
                    "--out", str(tmp_path / "got"), "--models", "linear", "--n-resamples", "100", "--no-plots"])
    assert got["features"] == ["score", "variation"]  # the TREC default: no caption text
    for key, value in ref["models"]["linear"].items():
        if key != "chance":
            assert got["models"]["linear"][key] == pytest.approx(value, nan_ok=True), key
    for method, metrics in ref["fusion"]["methods"].items():
        assert got["fusion"]["methods"][method] == pytest.approx(metrics), method
    assert (tmp_path / "got" / "weights.npy").is_file() and (tmp_path / "got" / "input" / "sims" / "val.npy").is_file()
    assert run_cli(qpp_main, ["--trec-run", str(test), "--qrels", str(tmp_path / "trec" / "qrels-test.trec"),
                              "--features", "text"]) == 2


def test_caption_fusion_of_one_trec_run_equals_its_matrix(tmp_path):
    runs = three_systems(tmp_path / "runs", n=15)
    path = _export(runs[0], "test", tmp_path / "trec")
    common = ["--methods", "combsum,rrf", "--resamples", "50", "--quiet", "--no-plot"]
    assert _fusion(["--run", str(runs[0]), "--out", str(tmp_path / "a"), *common]) == 0
    assert _fusion(["--sims", str(path), "--qrels", str(tmp_path / "trec" / "qrels-test.trec"),
                    "--out", str(tmp_path / "b"), *common]) == 0
    a = json.loads((tmp_path / "a" / "results.json").read_text())
    b = json.loads((tmp_path / "b" / "results.json").read_text())
    assert a["methods"] == b["methods"] and a["baseline_per_caption"] == b["baseline_per_caption"]
    assert _fusion(["--sims", str(path), "--out", str(tmp_path / "c"), *common]) == 2  # no qrels
    assert not (tmp_path / "c").exists()
