"""fusion.run.run_fusion's numbers against brute-force references: every baseline block, the fused methods in
both directions and the significance family (mutants of the result assembly all survived the CLI tests, which
check files and formats, not these values)."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from fusion.run import run_fusion
from retrieval.metrics import metrics_from_ranks
from retrieval.sims_io import build_manifest

N, K = 16, 3


def _rank(values: np.ndarray, own: float) -> float:
    """0-based tie-averaged position of ``own`` among ``values`` (brute force)."""
    return float(np.sum(values > own) + (np.sum(values == own) - 1) / 2)


def _t2a(mat: np.ndarray, gt) -> np.ndarray:
    return np.array([_rank(row, row[g]) for row, g in zip(mat, gt)])


def _a2t(mat: np.ndarray, gt) -> np.ndarray:
    gt = np.asarray(gt)
    return np.array([min(_rank(mat[:, c], mat[q, c]) for q in np.flatnonzero(gt == c)) for c in range(mat.shape[1])])


@pytest.fixture(scope="module")
def fused_run(tmp_path_factory):
    rng = np.random.default_rng(3)
    clip = rng.standard_normal((N, 6))
    noisy = np.repeat(clip, K, 0) + 6.0 * rng.standard_normal((N * K, 6))  # weak signal: some fused ranks >= 10
    sims = (noisy @ clip.T).astype(np.float32)
    manifest = build_manifest("test", [f"clip{i}" for i in range(N)], None, {}, K)
    params = {"norm": "none", "depth": 100, "k": 60, "weights": None}
    out = tmp_path_factory.mktemp("fusion")
    results = run_fusion(sims, manifest, out, ["combsum", "rrf"], params, resamples=500, plot=False)
    return sims, results


def test_baselines_are_the_caption_ranks_read_three_ways(fused_run):
    sims, res = fused_run
    gt = np.repeat(np.arange(N), K)
    caption = _t2a(sims.astype(np.float64), gt)
    by_clip = caption.reshape(N, K)
    assert 0 < res["baseline_per_caption"]["R1"] < 100  # not a degenerate check
    assert res["baseline_per_caption"] == pytest.approx(metrics_from_ranks(caption))
    assert res["baseline_caption0"] == pytest.approx(metrics_from_ranks(by_clip[:, 0]))
    assert res["oracle_best_caption"] == pytest.approx(metrics_from_ranks(by_clip.min(axis=1)))
    assert res["baseline_per_caption_a2t"] == pytest.approx(metrics_from_ranks(_a2t(sims.astype(np.float64), gt)))


def test_fused_methods_in_both_directions(fused_run):
    sims, res = fused_run
    x = sims.astype(np.float64).reshape(N, K, N)
    ranks = np.array([[_rank(row, v) + 1 for v in row] for row in x.reshape(N * K, N)]).reshape(N, K, N)
    fused = {"combsum": x.sum(axis=1), "rrf": (1.0 / (60 + ranks)).sum(axis=1)}
    diag = np.arange(N)
    for name, mat in fused.items():
        assert res["methods"][name] == pytest.approx(metrics_from_ranks(_t2a(mat, diag))), name
        assert res["methods_a2t"][name] == pytest.approx(metrics_from_ranks(_a2t(mat, diag))), name
    assert res["methods"]["combsum"] != res["methods_a2t"]["combsum"]  # the two directions differ here


def test_significance_against_the_per_clip_mean_caption_rr(fused_run):
    """vs_baseline_per_clip: each method's per-clip RR against the mean RR of the clip's K caption queries
    (paired t-test as scipy), Holm over the two methods; vs_combsum holds rrf only."""
    sims, res = fused_run
    gt = np.repeat(np.arange(N), K)
    baseline = (1.0 / (_t2a(sims.astype(np.float64), gt) + 1)).reshape(N, K).mean(axis=1)
    x = sims.astype(np.float64).reshape(N, K, N)
    fused_rr = 1.0 / (_t2a(x.sum(axis=1), np.arange(N)) + 1)
    detail = res["significance"]["detail"]["vs_baseline_per_clip"]["combsum"]
    ref = stats.ttest_rel(fused_rr, baseline)
    assert detail["mean_diff"] == pytest.approx(float(np.mean(fused_rr - baseline)))
    assert detail["p_t"] == pytest.approx(ref.pvalue, rel=1e-9)
    assert set(res["significance"]["vs_combsum"]) == {"rrf"}
    assert fused_rr.min() < 1 / 10  # a fused rank beyond 10: the test's RR has no cut-off (nor the baseline's)
