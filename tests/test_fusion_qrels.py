"""fusion.py --eval-qrels: multi-relevance metrics of the caption-query rows (fusion/qrels_eval.py)."""
import json
from pathlib import Path

import numpy as np
import pytest

from retrieval.sims_io import build_manifest, load_sims, save_sims
from retrieval.trec import write_trec_qrels
from tests.sysfusion_helpers import three_systems
from utils.errors import run_cli
from utils.outputs import write_run_record

ROOT = Path(__file__).resolve().parents[1]


def _main():
    import importlib.util
    spec = importlib.util.spec_from_file_location("fusion_script_qrels", ROOT / "fusion.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.main


MAIN = _main()
FAST = ["--resamples", "50", "--quiet", "--no-plot"]


def _run(root: Path, sims: np.ndarray, n: int, k: int) -> Path:
    run = root / "saved" / "tiny" / "2026-01-01_00-00-00_seed-0"
    save_sims(run / "sims", "test", sims, build_manifest("test", [f"c{i}.wav" for i in range(n)], None, {}, k))
    write_run_record(run, "tests")
    (run / "metrics.json").write_text("{}")
    return run


def _own_clip_qrels(path: Path, manifest) -> Path:
    return write_trec_qrels(path, {q: {manifest.clip_ids[c]: 1} for q, c in zip(manifest.query_ids, manifest.gt_cols())})


def test_hand_made_multi_relevance_r1(tmp_path, capsys):
    # 3 clips x 2 captions; both captions of clip 0 rank clip 1 first, every other caption ranks its own clip first
    n, k = 3, 2
    sims = np.tile(np.array([0.3, 0.2, 0.1], dtype=np.float32), (n * k, 1))
    for q in range(n * k):
        sims[q, q // k] = 1.0
    sims[0:2, 1] = 2.0
    run = _run(tmp_path, sims, n, k)
    _, man = load_sims(run / "sims" / "test.npy")
    judgements = {q: {man.clip_ids[c]: 1} for q, c in zip(man.query_ids, man.gt_cols())}
    judgements[man.query_ids[0]][man.clip_ids[1]] = 2  # caption 0 of clip 0 also describes clip 1 (graded)
    qrels = write_trec_qrels(tmp_path / "extra.trec", judgements)
    rc = run_cli(MAIN, ["--run", str(run), "--methods", "combsum", "--eval-qrels", str(qrels)] + FAST)
    assert rc == 0, capsys.readouterr().err
    res = json.loads((run / "fusion" / "results.json").read_text())
    assert res["baseline_per_caption"]["R1"] == pytest.approx(100 * 4 / 6)  # one relevant clip: 4 of 6 hit
    mr = res["multi_relevance"]
    assert list(mr["rows"]) == ["baseline_per_caption"] and mr["graded"] is True
    m = mr["rows"]["baseline_per_caption"]
    assert m["R1"] == pytest.approx(100 * 5 / 6) and m["n_queries"] == 6  # caption 0 of clip 0 now hits at 1
    assert m["MRR"] == pytest.approx(100 * (5 + 0.5) / 6)  # caption 1 of clip 0: own clip second
    md = (run / "fusion" / "results.md").read_text()
    assert "| baseline_per_caption | 6 | 83.33 |" in md and "no caption judgements" in md


def test_own_clip_qrels_reproduce_single_relevance_caption_fusion(tmp_path, capsys):
    rng = np.random.default_rng(0)
    n, k = 12, 5
    clip = rng.standard_normal((n, 8))
    sims = ((np.repeat(clip, k, 0) + 2.0 * rng.standard_normal((n * k, 8))) @ clip.T / 8).astype(np.float32)
    run = _run(tmp_path, sims, n, k)
    _, man = load_sims(run / "sims" / "test.npy")
    qrels = _own_clip_qrels(tmp_path / "own.trec", man)
    rc = run_cli(MAIN, ["--run", str(run), "--methods", "combsum,rrf", "--eval-qrels", str(qrels)] + FAST)
    assert rc == 0, capsys.readouterr().err
    res = json.loads((run / "fusion" / "results.json").read_text())
    m = res["multi_relevance"]["rows"]["baseline_per_caption"]
    for key in ("R1", "R5", "R10"):
        assert m[key] == pytest.approx(res["baseline_per_caption"][key])
    assert res["multi_relevance"]["graded"] is False and res["multi_relevance"]["mean_relevant"] == 1.0


def test_own_clip_qrels_reproduce_single_relevance_system_fusion(tmp_path, capsys):
    runs = three_systems(tmp_path, n=20, k=3)
    _, man = load_sims(runs[0] / "sims" / "test.npy")
    qrels = _own_clip_qrels(tmp_path / "own.trec", man)
    out = tmp_path / "sysout"
    rc = run_cli(MAIN, ["--runs", *map(str, runs), "--systems-methods", "combsum,weighted_combsum",
                        "--out", str(out), "--eval-qrels", str(qrels)] + FAST)
    assert rc == 0, capsys.readouterr().err
    res = json.loads((out / "results.json").read_text())
    rows = res["multi_relevance"]["rows"]
    assert set(rows) == set(res["caption_queries"]["rows"]) == {"good", "fair", "noise", "fusion: combsum",
                                                                 "fusion: weighted_combsum"}
    for name, m in rows.items():
        single = res["caption_queries"]["rows"][name]["metrics"]
        for key in ("R1", "R5", "R10"):
            assert m[key] == pytest.approx(single[key]), (name, key)
    assert "Multi-relevance" in (out / "results.md").read_text()


def test_bad_qrels_exit_2_one_line_nothing_written(tmp_path, capsys):
    runs = three_systems(tmp_path / "sys", n=8, k=2)
    _, man = load_sims(runs[0] / "sims" / "test.npy")
    bad = tmp_path / "bad"
    bad.mkdir()
    q0, c0 = man.query_ids[0], man.clip_ids[0]
    files = {"unknown_query": f"nosuchclip.wav#0 0 {c0} 1\n", "unknown_clip": f"{q0} 0 nosuchclip.wav 1\n",
             "malformed": f"{q0} {c0} 1\n", "empty": ""}
    for name, text in files.items():
        (bad / f"{name}.trec").write_text(text)
    before = sorted(tmp_path.rglob("*"))
    cases = [(name, str(bad / f"{name}.trec")) for name in files] + [("missing", str(bad / "missing.trec"))]
    for name, path in cases:
        for argv in (["--run", str(runs[0])], ["--runs", *map(str, runs), "--out", str(tmp_path / "o")]):
            rc = run_cli(MAIN, argv + ["--eval-qrels", path] + FAST)
            err = capsys.readouterr().err.strip().splitlines()
            assert rc == 2 and len(err) == 1 and err[0].startswith("error: "), (name, argv[0], err)
            assert Path(path).name in err[0], (name, err)
    assert sorted(tmp_path.rglob("*")) == before
