"""Tied predictions earn no credit, chance levels follow the predictions' ties, degenerate targets are refused, and
the printed table never hides a partial or undefined value (docs/QPP.md §Evaluation)."""
import itertools
import json

import numpy as np
import pytest
from scipy import stats

from qpp import evaluate as ev
from qpp.run import run_qpp
from qpp.synthetic_run import make_synthetic_run
from utils.errors import UserError, run_cli
from utils.io import write_json
from utils.outputs import write_run_record

TAU_INSP_MAX = {k: ev.tau_inspired_max(k) for k in (3, 4, 5, 6)}


# ---------------------------------------------------------------------------------------------- references
def _fork_definitions(t, p, k):
    """The fork's per-clip metrics with ties in the predictions broken by caption index (the definitions as
    published, and this module's code before ties were scored as an expectation)."""
    x, y = ev.group_ranks(t, k), ev.group_ranks(p, k)
    fork_tau = float(np.mean(ev.kendall_tau_b_groups(x, y)))
    d = ev.tau_inspired_group(x, y)
    tau_insp = float(d.sum() / (ev.tau_inspired_max(k) * d.size))
    tt, pp = np.reshape(t, (-1, k)), np.reshape(p, (-1, k))
    chosen = tt[np.arange(len(tt)), np.argmin(pp, axis=1)]
    pick = float(np.isclose(chosen, tt.min(axis=1), rtol=0, atol=1e-12).mean())
    return fork_tau, tau_insp, pick


def _brute_force_tie_breaks(t, p, k):
    """Mean of the fork's metrics over every tie-break of the predictions: each of the K! priority orders ranks the
    predictions by (value, priority); every order consistent with the ties is reached equally often."""
    x = ev.group_ranks(t, k)
    tt, pp = np.reshape(t, (-1, k)), np.reshape(p, (-1, k))
    taus, ds, picks = [], [], []
    for g in range(len(tt)):
        tg, dg, pg = [], [], []
        for prio in itertools.permutations(range(k)):
            order = np.lexsort((np.array(prio), pp[g]))
            y = np.empty(k)
            y[order] = np.arange(1, k + 1)
            tg.append(stats.kendalltau(x[g], y).statistic)
            dg.append(ev.tau_inspired_group(x[g][None], y[None])[0])
            pg.append(float(np.isclose(tt[g, order[0]], tt[g].min(), rtol=0, atol=1e-12)))
        taus.append(np.mean(tg))
        ds.append(np.mean(dg))
        picks.append(np.mean(pg))
    return float(np.mean(taus)), float(np.sum(ds) / (ev.tau_inspired_max(k) * len(tt))), float(np.mean(picks))


# ---------------------------------------------------------------------------------------------- per-clip metrics
@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("k", [3, 4, 5, 6])
def test_without_tied_predictions_the_fork_metrics_are_bit_identical(seed, k):
    rng = np.random.default_rng(seed)
    g = int(rng.integers(1, 400))
    t = rng.normal(size=g * k) if seed % 2 else rng.integers(0, 4, size=g * k).astype(float)  # truth may tie
    p = rng.normal(size=g * k) * 10.0 ** rng.integers(-6, 6)
    r = ev.evaluate(t, p, k)
    fork_tau, tau_insp, pick = _fork_definitions(t, p, k)
    assert r["kendall_tau_group_mean_ordinal"] == fork_tau
    assert r["tau_inspired"] == tau_insp
    assert r["pick_best_accuracy"] == pick
    assert r["clips_with_tied_predictions"] == 0 and not r["predictions_constant"]


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("k", [3, 4, 5])
def test_tied_predictions_score_the_exact_mean_over_all_tie_breaks(seed, k):
    rng = np.random.default_rng(100 + seed)
    g = 30
    t = rng.normal(size=g * k) if seed % 2 else rng.integers(0, 3, size=g * k).astype(float)
    t = t + np.tile(np.arange(k), g) * (seed % 3)  # truth correlated with caption order: index tie-breaks paid
    p = rng.integers(0, 1 + seed % 4, size=g * k).astype(float)  # 1..4 distinct values: many ties
    r = ev.evaluate(t, p, k)
    want = _brute_force_tie_breaks(t, p, k)
    assert r["kendall_tau_group_mean_ordinal"] == pytest.approx(want[0], abs=1e-12)
    assert r["tau_inspired"] == pytest.approx(want[1], rel=1e-12)
    assert r["pick_best_accuracy"] == pytest.approx(want[2], abs=1e-12)
    assert r["clips_with_tied_predictions"] == sum(len(set(row)) < k for row in p.reshape(-1, k))


def test_tau_inspired_expectation_equals_the_mean_over_consistent_permutations():
    """The tie-block marginal formula against explicit enumeration of the permutations consistent with the
    predicted order (a consistency mask over all K!), for every tie pattern of K=5 and random true orders."""
    k = 5
    perms = np.array(list(itertools.permutations(range(1, k + 1))), dtype=float)
    rng = np.random.default_rng(7)
    patterns = {tuple(np.unique(c, return_inverse=True)[1]) for c in itertools.product(range(k), repeat=k)}
    for pat in sorted(patterns):
        p = np.array(pat, dtype=float)
        x = rng.permutation(np.arange(1, k + 1)).astype(float)
        less = p[:, None] < p[None, :]  # p_i < p_j must give y_i < y_j
        ok = np.all(~less | (perms[:, :, None] < perms[:, None, :]), axis=(1, 2))
        want = ev.tau_inspired_group(np.broadcast_to(x, perms[ok].shape), perms[ok]).mean()
        lo, hi = ev.predicted_rank_blocks(p, k)
        got = ev.tau_inspired_expected_group(x[None], lo, hi)[0]
        assert got == pytest.approx(want, rel=1e-12), pat


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("k", [2, 3, 5, 6])
def test_constant_predictions_score_exactly_chance(seed, k):
    rng = np.random.default_rng(seed)
    g = int(rng.integers(1, 300))
    t = rng.normal(size=g * k) + np.tile(np.arange(k), g)  # caption index predicts the truth
    if seed % 2:
        t = np.round(t)  # ties in the truth too
    c = float(rng.normal())
    r = ev.evaluate(t, np.full(t.size, c), k)
    ch = r["chance"]
    assert r["kendall_tau_group_mean_ordinal"] == 0.0 == ch["kendall_tau_group_mean_ordinal"]
    assert r["tau_inspired"] == pytest.approx(ch["tau_inspired"], rel=1e-12)
    assert r["pick_best_accuracy"] == ch["pick_best_accuracy"]
    assert r["sMARE"] == pytest.approx(ch["sMARE"], rel=1e-12)
    assert np.isnan(r["kendall_tau_group_mean"]) and r["tau_groups_nan"] == g
    assert r["predictions_constant"] and r["clips_with_tied_predictions"] == g


def test_the_audit_case_a_constant_predictor_no_longer_beats_chance():
    """A constant predictor on the synthetic run printed forkTau*100 = 10 (chance 0), tauInsp below chance and
    sMARE 0.25 vs chance 0.333."""
    rng = np.random.default_rng(0)
    t = np.log2(1 + rng.integers(0, 200, size=160)).astype(float) + np.tile([0, 0.1, 0.2, 0.3, 0.4], 32)
    r = ev.evaluate(t, np.zeros(160), 5)
    for m in ("kendall_tau_group_mean_ordinal_x100", "tau_inspired_x100", "pick_best_accuracy", "sMARE"):
        assert r[m] == pytest.approx(r["chance"][m], rel=1e-12, abs=1e-12), m


# ---------------------------------------------------------------------------------------------- sMARE chance
def test_smare_chance_for_untied_predictions_is_the_permutation_formula():
    rng = np.random.default_rng(0)
    for n in (1, 2, 3, 7, 50, 1001):
        for t in (rng.normal(size=n), rng.integers(0, 4, size=n).astype(float)):
            p = rng.normal(size=n)
            assert ev.smare_chance(t, p) == ev.smare_chance(t)  # exact: half-integer sums below 2^53
            if len(np.unique(t)) == n:
                assert ev.smare_chance(t, p) == pytest.approx(ev.smare_chance_no_ties(n), rel=1e-12)


@pytest.mark.parametrize("seed", range(6))
def test_smare_chance_with_tied_predictions_is_the_mean_over_random_assignments(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 8))
    t = rng.integers(0, 3, size=n).astype(float) if seed % 2 else rng.normal(size=n)
    p = rng.integers(0, 3, size=n).astype(float)
    rp = stats.rankdata(p)
    perms = np.array(list(itertools.permutations(range(n))))
    brute = np.mean([ev.smare(t, rp[s]) for s in perms])  # every assignment of the predicted ranks to queries
    assert ev.smare_chance(t, p) == pytest.approx(brute, rel=1e-12)
    # and the O(n²) double sum on a larger input
    m = 3000
    t, p = rng.normal(size=m), rng.integers(0, 40, size=m).astype(float)
    r, q = stats.rankdata(t), stats.rankdata(p)
    assert ev.smare_chance(t, p) == pytest.approx(np.abs(r[:, None] - q[None, :]).sum() / m ** 3, rel=1e-12)


def test_smare_chance_of_a_constant_predictor_is_its_smare_and_scales():
    rng = np.random.default_rng(1)
    for n in (2, 5, 160, 5225):
        t = rng.normal(size=n)
        assert ev.smare_chance(t, np.ones(n)) == pytest.approx(ev.smare(t, np.ones(n)), rel=1e-12)
    n = 2_000_000  # O(n log n): an n² table would need 32 TB
    t, p = rng.normal(size=n), rng.integers(0, 50, size=n).astype(float)
    assert 0.0 < ev.smare_chance(t, p) < 0.34


# ---------------------------------------------------------------------------------------------- the printed table
def _rows():
    rng = np.random.default_rng(0)
    g = 32
    t = np.tile(np.arange(5.0), g) + rng.normal(size=5 * g) * 0.1
    hit = t.copy()
    hit[:5 * 27] = 1.0  # 27 clips whose 5 captions are equally good
    return [("score", "linear", ev.evaluate(t, t + rng.normal(size=t.size), 5)),
            ("score", "tree", ev.evaluate(t, np.round(t + rng.normal(size=t.size)), 5)),
            ("score", "flat", ev.evaluate(t, np.zeros(t.size), 5)),
            ("hits", "linear", ev.evaluate(hit, t + rng.normal(size=t.size), 5))]


def test_table_marks_constant_predictors_undefined_and_partial_values():
    table = ev.format_table(_rows())
    lines = table.splitlines()
    assert "nan" not in table.lower().replace("n/a", "")
    flat = next(ln for ln in lines if ln.startswith("score") and "flat" in ln)
    assert "flat (constant)" in flat and flat.count("n/a") == 4  # tauB, pearson, spearman, kendall
    assert any(ln.startswith("n/a in pearson/spearman/kendall: undefined, the predictions are constant")
               and "flat [score]" in ln for ln in lines)
    assert any(ln.startswith("n/a in tauB") and "flat [score]" in ln for ln in lines)
    hits = next(ln for ln in lines if ln.startswith("hits") and "linear" in ln)
    assert "*" in hits
    assert any(ln.startswith("* tauB over 5 of 32 clips (27 clips") and ln.endswith("linear [hits]")
               for ln in lines)
    # the tree's rounded predictions tie within clips; the table says so, and sMARE's chance is per predictor
    assert any(ln.startswith("clips (of 32) with predictions tied within the clip") and ln.endswith("score: tree 29")
               for ln in lines)
    chance = next(ln for ln in lines if ln.startswith("score") and "(chance)" in ln)
    assert chance.split()[-1] == "varies"
    assert "varies: the chance of sMARE depends on the predictor's ties: linear [score] 0.3333, tree [score] 0.3313, " \
           "flat [score] 0.2500" in lines
    two = ev.format_table(_rows()[:3] + [("score", "linear2", _rows()[0][2])])  # two rows share 0.3333
    assert "varies: the chance of sMARE depends on the predictor's ties: 0.3333 except tree [score] 0.3313, " \
           "flat [score] 0.2500" in two.splitlines()
    # a table without any of this has no footnotes
    plain = ev.format_table(_rows()[:1])
    assert len(plain.splitlines()) == 5 and "0*" not in plain and "n/a" not in plain


def test_results_json_keeps_undefined_values_machine_readable(tmp_path):
    res = _rows()[2][2]
    write_json(tmp_path / "r.json", res)
    back = json.loads((tmp_path / "r.json").read_text())
    assert back["pearson"] is None and back["kendall_tau_group_mean"] is None
    assert back["predictions_constant"] is True and back["tau_groups_nan"] == 32
    assert back["chance"]["sMARE"] == pytest.approx(back["sMARE"])


def test_tree_predictions_tie_within_clips_and_the_run_reports_it(tmp_path):
    run = make_synthetic_run(tmp_path / "run", {"val": 40, "test": 30}, seed=3)
    logged = []
    res = run_qpp(run, features=["score"], models=["linear", "tree"], out_dir=tmp_path / "o", n_resamples=100,
                  plots=False, log=logged.append)
    tree = res["models"]["tree"]
    assert tree["clips_with_tied_predictions"] > 0  # min_samples_leaf 20 on 200 fitting rows: few leaves
    assert tree["chance"]["sMARE"] < ev.smare_chance_no_ties(150)  # ties in the predictions lower sMARE's chance
    table = next(s for s in logged if s.startswith("features"))
    tied_line = next(ln for ln in table.splitlines() if ln.startswith("clips (of 30) with predictions tied"))
    assert tied_line.endswith(f"score: tree {tree['clips_with_tied_predictions']}")  # linear: untied here
    assert tied_line in (tmp_path / "o" / "results.md").read_text()


# ---------------------------------------------------------------------------------------------- refused inputs
def _variant(tmp_path, name, clips, edit=None):
    run = make_synthetic_run(tmp_path / name, clips, seed=4)
    if edit:
        for split, fn in edit.items():
            sims = np.load(run / "sims" / f"{split}.npy")
            np.save(run / "sims" / f"{split}.npy", fn(sims).astype(np.float32))
        write_run_record(run, "tests")  # a run whose training produced these matrices
    return run


def _identity_like(s):  # every caption ranks its own clip first
    k = s.shape[0] // s.shape[1]
    out = np.zeros_like(s)
    out[np.arange(s.shape[0]), np.arange(s.shape[0]) // k] = 1.0
    return out


@pytest.mark.parametrize("name, clips, edit, argv, needle", [
    ("test_equal", {"val": 12, "test": 12}, {"test": lambda s: np.full_like(s, 0.5)}, [],
     "qpp: the test targets are all equal ({run}/sims/test.npy: log2_rank = 2.70044 for all 60 caption queries; "
     "every caption ranks its clip at 6.5 of 12): nothing to predict"),
    ("test_equal_cv", {"val": 12, "test": 12}, {"test": lambda s: np.zeros_like(s)}, ["--cv", "3"],
     "qpp: the test targets are all equal ({run}/sims/test.npy"),
    ("one_clip", {"val": 20, "test": 1}, None, [],
     "{run}/sims/test.json: 1 clip in clip_ids: retrieval needs at least 2"),  # refused as a manifest now
    ("perfect", {"val": 12, "test": 6}, {"test": _identity_like}, ["--target", "rr"],
     "rr = 1 for all 30 caption queries; every caption ranks its clip at 1 of 6"),
    ("hit10_small", {"val": 12, "test": 8}, None, ["--target", "hit10"],
     "hit10 = 1 for all 40 caption queries; every caption's clip is in its top 10): nothing to predict"),
    ("val_equal", {"val": 12, "test": 12}, {"val": lambda s: np.full_like(s, -0.25)}, [],
     "qpp: the val targets are all equal ({run}/sims/val.npy: log2_rank = 2.70044 for all 60 caption queries; "
     "every caption ranks its clip at 6.5 of 12): nothing to learn from"),
])
def test_all_equal_targets_are_refused_in_one_line_with_nothing_written(tmp_path, capsys, name, clips, edit, argv,
                                                                        needle):
    import importlib.util
    from pathlib import Path
    repo = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location("qpp_cli", repo / "qpp.py")
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    run = _variant(tmp_path, name, clips, edit)
    out = tmp_path / "out"
    capsys.readouterr()
    code = run_cli(cli.main, ["--run", str(run), "--out", str(out), "--features", "score", "--models", "linear",
                              "--no-plots"] + argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert needle.format(run=run) in err[0], err[0]
    assert not out.exists()


def test_all_equal_targets_raise_from_the_api_too(tmp_path):
    run = _variant(tmp_path, "r", {"val": 12, "test": 12}, {"test": lambda s: np.full_like(s, 0.5)})
    with pytest.raises(UserError, match="the test targets are all equal"):
        run_qpp(run, features=["score"], models=["linear"], out_dir=tmp_path / "o", plots=False, log=lambda s: None)
    assert not (tmp_path / "o").exists()
