"""End-to-end qpp runs on small synthetic run folders, and the CLI's bad-input exits."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import qpp as _qpp  # noqa: F401
from qpp.run import run_qpp
from qpp.synthetic_run import make_synthetic_run
from utils.outputs import write_run_record

REPO = Path(__file__).resolve().parents[1]
FAST = ["--features", "score,variation", "--models", "linear,xgboost,tree", "--n-resamples", "500", "--no-plots"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return make_synthetic_run(tmp_path_factory.mktemp("qpprun") / "run", {"val": 40, "test": 50}, seed=1)


def _main(argv):
    import qpp as _  # noqa
    sys.path.insert(0, str(REPO))
    import importlib.util
    spec = importlib.util.spec_from_file_location("qpp_cli", REPO / "qpp.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    from utils.errors import run_cli
    return run_cli(mod.main, argv)


def test_end_to_end_fit_on_val(run_dir, tmp_path):
    out = tmp_path / "out"
    assert _main(["--run", str(run_dir), "--out", str(out)] + FAST[:-1]) == 0
    res = json.loads((out / "results.json").read_text())
    assert set(res["models"]) == {"linear", "xgboost", "tree"}
    for m in res["models"].values():
        for key in ("kendall_tau_group_mean", "tau_inspired", "pearson", "spearman", "kendall", "sMARE"):
            assert key in m and key in m["chance"]
    assert res["models"]["linear"]["kendall_tau_group_mean"] > 0.2  # quality is learnable here
    assert set(res["by_features"]) == {"score", "variation", "score+variation"}
    fus = res["fusion"]["methods"]
    assert {"combsum", "rrf", "qpp_weighted_combsum", "fork_inverted_weighted_combsum"} <= set(fus)
    assert "p_value" in res["fusion"]["significance"]["qpp_weighted_combsum vs combsum"]
    w = np.load(out / "weights.npy")
    meta = json.loads((out / "weights.json").read_text())
    assert w.dtype == np.float32 and w.shape == (250,)
    assert meta["query_ids"][:2] == ["clip0000.wav#0", "clip0000.wav#1"]
    assert {"model", "features", "mapping", "temperature", "query_ids"} <= set(meta)
    np.testing.assert_allclose(w.reshape(50, 5).sum(axis=1), 1.0, rtol=1e-5)
    pred = pd.read_csv(out / "predictions.csv")
    assert list(pred.columns[:4]) == ["clip", "caption_index", "query_id", "target"]
    assert "pred_xgboost" in pred.columns and "pred_linear[score]" in pred.columns
    assert len(pred) == 250
    # the weights' predictor was selected on val among (feature set x {linear, xgboost}), never on test
    selection = res["weights"]["selection"][0]
    assert set(selection) == {f"{f}|{m}|{mp}" for f in ("score", "variation", "score+variation")
                              for m in ("linear", "xgboost") for mp in ("softmax", "rank")}
    assert f"{meta['features']}|{meta['model']}|{meta['mapping']}" in selection
    # weights follow the chosen predictions: the predicted-best caption gets the largest weight
    if meta["temperature"] != "inf":  # "inf" = uniform softmax weights (selection chose plain CombSum)
        col = f"pred_{meta['model']}" + ("" if meta["features"] == "score+variation" else f"[{meta['features']}]")
        p = pred[col].to_numpy().reshape(50, 5)
        assert np.all(np.argmax(w.reshape(50, 5), axis=1) == np.argmin(p, axis=1))
    assert (out / "results.md").is_file()


def test_cv_protocol_ltr_and_plots(run_dir, tmp_path):
    res = run_qpp(run_dir, cv=3, features=["score"], models=["linear"], ltr=True, out_dir=tmp_path / "cv",
                  n_resamples=200, log=lambda s: None)
    assert res["protocol"]["cv"] == 3 and res["protocol"]["fit_split"] is None
    assert "xgb_ltr" in res["models"]
    assert len(res["plots"]) == 2 and all(Path(p).stat().st_size > 1000 for p in res["plots"])


def test_text_features_path_on_20_captions(tmp_path):
    run = make_synthetic_run(tmp_path / "tiny", {"val": 4, "test": 4}, seed=2)
    res = run_qpp(run, features=["text"], models=["linear"], out_dir=tmp_path / "o", temperature=1.0,
                  n_resamples=100, plots=False, log=lambda s: None)
    assert res["weights"]["temperature"] == 1.0
    assert np.isfinite(res["models"]["linear"]["sMARE"])
    assert list((tmp_path / "o" / "cache").glob("minilm_*.npy"))


@pytest.mark.parametrize("argv, needle", [
    (["--models", "foo"], "valid: linear, mlp, xgboost, gbr, tree"),
    (["--features", "bogus"], "valid: text, minilm"),
    (["--fit-split", "train"], "train.npy: missing"),
    (["--reproduce-fork"], "train.npy: missing"),
    (["--cv", "1"], "argument --cv: 1: must be >= 2"),
    ([], None),
])
def test_cli_bad_input_exits_2_with_one_line(run_dir, argv, needle, tmp_path):
    if not argv:  # no captions in the manifest but text features requested
        man = json.loads((run_dir / "sims" / "test.json").read_text())
        bare = make_synthetic_run(tmp_path / "nocap", {"val": 3, "test": 3})
        for split in ("val", "test"):
            m = json.loads((bare / "sims" / f"{split}.json").read_text())
            m["captions"] = []
            (bare / "sims" / f"{split}.json").write_text(json.dumps(m))
        write_run_record(bare, "tests")  # a run written without captions, not one edited after its record
        argv, needle, target = ["--features", "text"], "manifest has no captions", bare
        assert man["captions"]
    else:
        target = run_dir
    proc = subprocess.run([sys.executable, str(REPO / "qpp.py"), "--run", str(target), "--out",
                           str(tmp_path / "x")] + argv, capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], proc.stderr


def test_cli_missing_run_and_no_run(tmp_path):
    for argv in (["--run", str(tmp_path / "nope")], [], ["--run", str(tmp_path)]):
        proc = subprocess.run([sys.executable, str(REPO / "qpp.py")] + argv, capture_output=True, text=True,
                              cwd=REPO, timeout=120)
        assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_eval_from_training_config(run_dir, tmp_path):
    import shutil
    save = tmp_path / "saved"
    exp = save / "clotho-synthetic-tiny-ce" / "2026-01-01_00-00-00_seed-0"
    shutil.copytree(run_dir / "sims", exp / "sims")
    write_run_record(exp, "tests")
    (exp / "metrics.json").write_text("{}")
    code = _main(["--config", str(REPO / "configs/clotho-synthetic/tiny-ce.json"), "--eval_from_training_config",
                  "--custom_args", f"trainer.save_dir={save}", "--out", str(tmp_path / "o")] + FAST)
    assert code == 0 and (tmp_path / "o" / "results.json").is_file()
    # --config alone means the same, as in fusion.py (it stopped with "name a run")
    code = _main(["--config", str(REPO / "configs/clotho-synthetic/tiny-ce.json"), "--custom_args",
                  f"trainer.save_dir={save}", "--out", str(tmp_path / "o2")] + FAST)
    assert code == 0
    same = [json.loads((tmp_path / o / "results.json").read_text())["models"] for o in ("o", "o2")]
    assert same[0] == same[1]


def test_a_feature_constant_over_the_fitting_queries_cannot_blow_up_the_predictions(tmp_path):
    """40 fitting clips: top-50 statistics are constant up to rounding there (std ~1e-17) but vary over 60 test
    clips. Standardised by that noise, the linear model's predictions were ~1e14; the column is now flattened."""
    from qpp.features import SplitFeatures, build_matrix
    from qpp.models import fit_predict
    from qpp.run_inputs import load_split
    from qpp.targets import badness, compute_targets

    run = make_synthetic_run(tmp_path / "run", {"val": 40, "test": 60}, seed=7)
    (fs, fm), (es, em) = load_split(run, "val"), load_split(run, "test")
    k = fm.captions_per_clip
    fit, ev = SplitFeatures(fs, fm.captions, k), SplitFeatures(es, em.captions, k)
    rows_fit, rows_ev = np.arange(len(fm.query_ids)), np.arange(len(em.query_ids))
    x_fit, x_ev, names = build_matrix(["score", "variation"], fit, rows_fit, ev, rows_ev)
    for name in ("z_nqc_std50", "z_wig50"):
        col = names.index(name)
        assert np.all(x_fit[:, col] == x_fit[0, col]) and np.all(x_ev[:, col] == x_fit[0, col])
    assert np.ptp(x_ev[:, names.index("top1")]) > 0  # ordinary features untouched
    y_fit = badness(compute_targets(fs, fm.gt_cols())["rr"], "rr")
    for model in ("linear", "mlp"):
        pred = fit_predict(model, x_fit, y_fit, x_ev, k)
        assert np.all(np.isfinite(pred)) and np.abs(pred).max() < 10, (model, np.abs(pred).max())
    out = tmp_path / "qpp"
    assert _main(["--run", str(run), "--out", str(out), "--features", "score", "--models", "linear,mlp",
                  "--n-resamples", "200", "--no-plots"]) == 0
    table = pd.read_csv(out / "predictions.csv")
    assert table.filter(like="pred_").abs().to_numpy().max() < 10


def test_reproduce_fork_runs_and_the_same_seed_gives_the_same_numbers(tmp_path):
    """The fork left GradientBoostingRegressor and DecisionTreeRegressor unseeded; here --seed fixes them."""
    run = make_synthetic_run(tmp_path / "run", {"train": 30, "val": 10, "test": 30}, seed=3)
    outs = []
    for name in ("a", "b"):
        out = tmp_path / name
        assert _main(["--run", str(run), "--reproduce-fork", "--out", str(out), "--seed", "5",
                      "--n-resamples", "200", "--no-plots"]) == 0
        res = json.loads((out / "results.json").read_text())
        res.pop("timings_s", None)
        outs.append(res)
    assert set(outs[0]["models"]) == {"linear", "mlp", "gbr", "tree"}
    assert outs[0]["models"] == outs[1]["models"] and outs[0]["fusion"] == outs[1]["fusion"]


@pytest.mark.parametrize("n_fit", [2, 5, 10, 19, 20, 40])
def test_every_model_fits_a_small_collection(n_fit):
    """A real collection can be tiny (6/2/2 clips): the MLP's early stopping held out < 2 rows and sklearn raised."""
    from qpp.models import MODELS, fit_predict

    rng = np.random.default_rng(0)
    x = rng.normal(size=(n_fit, 4))
    y = x[:, 0] + 0.1 * rng.normal(size=n_fit)
    for name in MODELS:
        pred = fit_predict(name, x, y, rng.normal(size=(3, 4)), 5, seed=0)
        assert pred.shape == (3,) and np.isfinite(pred).all(), name


def test_plots_mark_undefined_values_instead_of_drawing_zero(tmp_path, monkeypatch):
    """A constant predictor's tau-b is undefined (NaN): drawn as 0 it looked like chance; Pearson printed 'nan'."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from qpp.evaluate import evaluate
    from qpp.plot import plot_results

    texts = []
    real_text = matplotlib.axes.Axes.text
    monkeypatch.setattr(matplotlib.axes.Axes, "text",
                        lambda self, *a, **k: texts.append(a[2]) or real_text(self, *a, **k))
    titles = []
    real_title = matplotlib.axes.Axes.set_title
    monkeypatch.setattr(matplotlib.axes.Axes, "set_title",
                        lambda self, label, *a, **k: titles.append(label) or real_title(self, label, *a, **k))
    rng = np.random.default_rng(0)
    y_true = rng.normal(size=50)
    constant = np.zeros(50)
    rows = [("score", "linear", evaluate(y_true, y_true + rng.normal(size=50), 5)),
            ("score", "tree", evaluate(y_true, constant, 5))]
    paths = plot_results(tmp_path, rows, y_true, constant, "tree [score]", "log2_rank")
    plt.close("all")
    assert all((tmp_path / p).is_file() for p in paths)
    assert texts == ["n/a"]  # one bar undefined: the constant predictor's
    assert any("Pearson n/a" in t for t in titles)
