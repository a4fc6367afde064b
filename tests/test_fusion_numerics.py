"""Numerics of fusion and metrics: NaN never ranked, no spurious overflow, tie-symmetric ranks, exact sums."""
import json

import numpy as np
import pytest

from fusion import methods
from fusion.methods import FusionOverflow
from fusion.normalize import get_ops
from fusion.registry import SCORE_BASED, fuse
from fusion.run import build_parser, main_from_args
from retrieval.metrics import gt_ranks_a2t, gt_ranks_t2a, t2a_metrics
from retrieval.sims_io import build_manifest, save_sims
from utils.outputs import write_run_record
from utils.errors import run_cli


# ------------------------------------------------------------------------------------------- metrics: NaN refused
def _with_nan(shape, where, dtype):
    x = np.random.default_rng(0).random(shape).astype(dtype)
    for r, c in where:
        x[r, c] = np.nan
    return x


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
@pytest.mark.parametrize("shape, where, row, col", [
    ((4, 4), [(0, 0)], 0, 0),                         # the ground truth itself
    ((6, 4), [(3, 2), (5, 1)], 3, 1),                  # off-diagonal; t2a names row 3, a2t column 1
    ((3000, 40), [(2999, 39)], 2999, 39),              # last cell of the last cache block
    ((3000, 40), [(1500, 7), (10, 30)], 10, 7),        # several blocks
])
def test_nan_scores_are_refused_naming_row_and_column(dtype, shape, where, row, col):
    x = _with_nan(shape, where, dtype)
    gt = np.arange(shape[0]) % shape[1]
    with pytest.raises(ValueError, match=f"^row {row} "):
        gt_ranks_t2a(x, gt)
    with pytest.raises(ValueError, match=f"^column {col} "):
        gt_ranks_a2t(x, gt)


def test_all_nan_matrix_no_longer_gives_map_200():
    with pytest.raises(ValueError, match="row 0"):
        t2a_metrics(np.full((4, 4), np.nan, np.float32), np.arange(4))


@pytest.mark.parametrize("fill", [np.inf, -np.inf, 3e38])
def test_infinite_and_huge_scores_are_ranked_only_nan_refused(fill):
    x = np.random.default_rng(1).random((8, 4)).astype(np.float32)
    x[:, 3] = fill  # a sum that is not finite: the precise scan runs and finds no NaN
    gt = np.arange(8) % 4
    expected = [(x[q] > x[q, gt[q]]).sum() + ((x[q] == x[q, gt[q]]).sum() - 1) / 2 for q in range(8)]
    np.testing.assert_array_equal(gt_ranks_t2a(x, gt), expected)
    assert np.isfinite(gt_ranks_a2t(x, gt)).all()
    x[6, 3] = np.nan  # beside infinities the NaN is still found
    with pytest.raises(ValueError, match="^row 6 .*column 3"):
        gt_ranks_t2a(x, gt)
    with pytest.raises(ValueError, match="^column 3 .*row 6"):
        gt_ranks_a2t(x, gt)


# ------------------------------------------------------------------------------------- fusion: no spurious overflow
N, K = 12, 5
DEVICES = ["cpu", "torch:cpu"]
RANK_METHODS = ("rrf", "borda", "isr")


def _sims(seed=0, n=N, k=K):
    """Tie-free scores in (-1, 1) with a signal (so fused metrics are not trivial)."""
    rng = np.random.default_rng(seed)
    clip = rng.standard_normal((n, 8))
    s = (np.repeat(clip, k, 0) + 2.0 * rng.standard_normal((n * k, 8))) @ clip.T
    return (s / (np.abs(s).max() * 1.01)).astype(np.float32)


def _params(n_rows=N * K, **kw):
    return {"norm": "none", "depth": 4, "k": 60, "weights": np.linspace(0.5, 1.5, n_rows), **kw}


@pytest.mark.parametrize("norm, exponent, device", [
    ("min-max", 127, "cpu"), ("min-max", 127, "torch:cpu"), ("z-score", 127, "cpu"), ("z-score", 127, "torch:cpu"),
    ("z-score", 70, "cpu"), ("z-score", -70, "cpu"), ("z-score", -100, "cpu")])  # torch's std survived +-70
@pytest.mark.parametrize("method", SCORE_BASED)
def test_normalised_fusion_is_exactly_scale_invariant(method, norm, exponent, device):
    """A power-of-two scale is exact, so normalised fusion must give the same bits at any scale: before, max - min
    or the variance overflowed (rows near 1e20 z-scored to all 0) or underflowed."""
    s = _sims()
    s[:, :2] = [1.98, -1.98]  # every row spans the range, so max - min leaves float32 at 2**127
    scaled = s * np.float32(2.0 ** exponent)
    assert np.isfinite(scaled).all()
    p = _params(norm=norm)
    np.testing.assert_array_equal(fuse(method, scaled, K, params=p, device=device), fuse(method, s, K, params=p, device=device))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("method", ["combsum", "weighted_combsum"])
@pytest.mark.parametrize("scale", [3e38, 1e38])
def test_overflowing_sum_raises_instead_of_inf(method, scale, device):
    s = _sims()
    s[:, 0] = 0.9  # K scores of 0.9 x scale in one column: the sum leaves float32
    s = (s * np.float32(scale)).astype(np.float32)
    assert np.isfinite(s).all()
    with pytest.raises(FusionOverflow) as err:
        fuse(method, s, K, params=_params(), device=device)
    assert err.value.method == method and err.value.largest == pytest.approx(np.abs(s).max(), rel=1e-6)
    assert "overflows float32" in str(err.value)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("span", [(1.98, -1.98), (1.98, -1.5), (1.9, -1.9)])
def test_combmnz_of_huge_finite_scores_equals_the_rescaled_one(span, device):
    """MNZ min-max-normalises every row: max - min of scores near 3e38 overflowed and MNZ became NaN."""
    s = _sims()
    s[:, :2] = span
    huge = s * np.float32(2.0 ** 127)
    np.testing.assert_array_equal(fuse("combmnz", huge, K, params=_params(), device=device),
                                  fuse("combmnz", s, K, params=_params(), device=device))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("method", ["combsum", "combmnz"])
def test_float16_input_is_computed_in_float32(method, device):
    """float16 scores near its max (60000) summed in float16 gave inf; now they are computed in float32."""
    s16 = (_sims() * 60000).astype(np.float16)
    p = _params()
    out = fuse(method, s16, K, params=p, device=device)
    np.testing.assert_array_equal(out, fuse(method, s16.astype(np.float32), K, params=p, device=device))


@pytest.mark.parametrize("weights", [1e300, 1e39, np.inf])
def test_weights_not_finite_in_float32_are_refused(weights):
    w = np.full(N * K, 1.0)
    w[7] = weights
    with pytest.raises(FusionOverflow, match="weights up to .* not finite in float32"):
        methods.weighted_combsum(_sims(), K, w)


# ------------------------------------------------------------------------------------------------------ CLIs
def _run(root, name, sims, k=K, splits=("test",)):
    run = root / name / "2026-01-01_00-00-00_seed-0"
    for split in splits:
        save_sims(run / "sims", split, sims, build_manifest(split, [f"clip{i}" for i in range(sims.shape[1])], None,
                                                            {"run": name}, k))
    write_run_record(run, "tests")
    (run / "metrics.json").write_text("{}")
    return run


def _cli(argv, capsys):
    rc = run_cli(lambda a: main_from_args(build_parser().parse_args(a)), argv)
    return rc, capsys.readouterr().err.strip().splitlines()


@pytest.mark.parametrize("argv", [["--methods", "combsum"], ["--methods", "rrf,combsum,combmnz"],
                                  ["--methods", "weighted_combsum", "--weights", "W"], []])
def test_cli_overflow_exits_2_naming_the_file_and_writes_nothing(tmp_path, capsys, argv):
    run = _run(tmp_path, "huge", (_sims() * np.float32(3e38)).astype(np.float32))
    np.save(run / "w.npy", np.ones(N * K))
    argv = [str(run / "w.npy") if a == "W" else a for a in argv]
    before = sorted(tmp_path.rglob("*"))
    rc, err = _cli(["--run", str(run), "--no-plot", "--quiet", "--resamples", "20", *argv], capsys)
    assert rc == 2 and len(err) == 1, err
    assert f"{run}/sims/test.npy overflows float32" in err[0] and "rescale" in err[0]
    assert sorted(tmp_path.rglob("*")) == before  # no fusion/ folder, no temporary left


@pytest.mark.parametrize("value", ["1e300", "3.5e38"])
def test_cli_weights_overflowing_float32_name_the_weights_file(tmp_path, capsys, value):
    run = _run(tmp_path, "w", _sims())
    w = np.ones(N * K)
    w[3] = float(value)
    np.save(run / "w.npy", w)
    rc, err = _cli(["--run", str(run), "--no-plot", "--quiet", "--methods", "weighted_combsum", "--weights",
                    str(run / "w.npy")], capsys)
    assert rc == 2 and len(err) == 1 and f"{run / 'w.npy'}: weight {float(value)}" in err[0], err
    assert not (run / "fusion").exists()


def test_cli_systems_overflow_names_the_file(tmp_path, capsys):
    s = _sims()
    a = _run(tmp_path, "a", s, splits=("val", "test"))
    b = _run(tmp_path, "b", (s * np.float32(3e38)).astype(np.float32), splits=("val", "test"))
    before = sorted(tmp_path.rglob("*"))
    rc, err = _cli(["--runs", str(a), str(b), "--systems-norm", "none", "--systems-methods", "combsum",
                    "--no-plot", "--quiet", "--resamples", "20"], capsys)
    assert rc == 2 and len(err) == 1, err
    assert "combsum of " in err[0] and f"{b}/sims/" in err[0] and "overflows float32" in err[0]
    # nothing written: only the (empty) parent of the default output folder may have been created
    assert [p for p in sorted(tmp_path.rglob("*")) if p not in before] in ([], [tmp_path / "system-fusion"])
    assert not (tmp_path / "system-fusion").exists() or not any((tmp_path / "system-fusion").iterdir())


def test_cli_z_score_of_scores_near_1e20_is_not_all_zero(tmp_path, capsys):
    """Before: std overflowed in float32, every row became 0 and R@10 was 0 with exit 0."""
    s = _sims()
    runs = [_run(tmp_path, name, x) for name, x in (("plain", s), ("e20", (s * np.float32(1e20)).astype(np.float32)))]
    results = []
    for run in runs:
        rc, err = _cli(["--run", str(run), "--no-plot", "--quiet", "--resamples", "20", "--norm", "z-score",
                        "--methods", "combsum,combmnz"], capsys)
        assert rc == 0, err
        results.append(json.loads((run / "fusion" / "results.json").read_text())["methods"])
    for method in ("combsum", "combmnz"):
        assert results[1][method]["R10"] > 0
        for key in ("R1", "R5", "R10"):
            assert results[1][method][key] == pytest.approx(results[0][method][key], abs=100 / N + 1e-9)


# ------------------------------------------------------------------------------------------ ties in rank fusion


def _tied_inputs():
    rng = np.random.default_rng(3)
    quant = (np.round(rng.random((N * K, N)) * 4) / 4).astype(np.float32)  # 5 levels: ties everywhere
    cut = _sims()
    cut[:, 2:6] = cut[:, 2:3]  # four clips tied near the top of many rows: the depth cut-off falls inside ties
    return {"all equal": np.full((N * K, N), 0.5, np.float32), "quantised": quant, "tied block": cut,
            "float64 quantised": quant.astype(np.float64)}


TIE_CASES = [(m, "none") for m in RANK_METHODS] + [(m, "rank") for m in SCORE_BASED]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", list(_tied_inputs()))
@pytest.mark.parametrize("method, norm", TIE_CASES + [("combmnz", "none")])
def test_rank_fusion_does_not_depend_on_the_column_order_of_ties(method, norm, name, device):
    """Permuting the candidate columns permutes the fused columns, and nothing else: no column index wins a tie."""
    if (method, norm, name) == ("combmnz", "none", "all equal"):
        pytest.skip("min-max of a constant row is 0 whatever the cut-off")
    s = _tied_inputs()[name]
    perm = np.random.default_rng(4).permutation(N)
    p = _params(norm=norm, depth=3)
    np.testing.assert_array_equal(fuse(method, s[:, perm], K, params=p, device=device),
                                  fuse(method, s, K, params=p, device=device)[:, perm])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("method, norm", TIE_CASES)
def test_all_equal_rows_fuse_to_constant_rows(method, norm, device):
    """Before: RRF/Borda/ISR ranked column 0 first and looked 'significantly' better than CombSum."""
    out = fuse(method, np.full((N * K, N), 0.5, np.float32), K, params=_params(norm=norm), device=device)
    assert (out == out[:, :1]).all()
    assert t2a_metrics(out, np.arange(N))["R1"] == 0.0


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("per_rank", [lambda r: r, lambda r: 1.0 / (60 + r), lambda r: 1.0 / r ** 2, lambda r: 41 - r],
                         ids=["rank", "rrf", "isr", "borda"])
def test_rank_scatter_untied_exact_tied_mean(per_rank, dtype, device):
    """Untied scores get exactly per_rank[r - 1] (the old values, bit for bit); a tie group gets the mean."""
    rng = np.random.default_rng(5)
    x = rng.random((6, 40)).astype(dtype)  # tie-free rows ...
    x[1, [3, 9, 30]] = x[1, 17]  # ... a tie of four in row 1
    x[4] = np.round(x[4] * 3)  # row 4: four levels only
    values = per_rank(np.arange(1, 41, dtype=np.float64))
    ops = get_ops(device)
    got = ops.to_numpy(ops.rank_scatter(ops.asarray(x), values))
    for row in range(6):
        r = x[row]
        better = (r[None, :] > r[:, None]).sum(1)
        tied = (r[None, :] == r[:, None]).sum(1)
        for j in range(40):
            expected = values[better[j]] if tied[j] == 1 else values[better[j]:better[j] + tied[j]].mean()
            if tied[j] == 1:
                assert got[row, j] == expected, (row, j)
            else:
                assert got[row, j] == pytest.approx(expected, rel=1e-15), (row, j)
        groups = {}
        for j in range(40):
            groups.setdefault(r[j], set()).add(got[row, j])
        assert all(len(v) == 1 for v in groups.values())  # a tie group shares one value exactly


# ------------------------------------------------------------------------------ exact sums (float64 accumulation)
def _permuted_twins(seed, dtype=np.float32, clips=40):
    """Columns 5..9 hold, per clip, the caption scores of columns 0..4 in another caption order (equal sums in exact
    arithmetic); column 10 is 0 and 11 is 1 in every row, so min-max leaves the scores unchanged."""
    rng = np.random.default_rng(seed)
    s = (np.round(rng.random((clips, K, 12)) * 100) / 100 * rng.choice([1, 7, 300], (clips, K, 1))).astype(dtype)
    for i in range(clips):
        s[i, :, 5:10] = s[i, rng.permutation(K), 0:5]
    s[:, :, 10], s[:, :, 11] = 0, s.max()
    return s.reshape(clips * K, 12)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("method, params", [("combsum", {}), ("weighted_combsum", {"weights": np.full(200, 0.3)}),
                                            ("combmnz", {"depth": 12}), ("combsum", {"norm": "min-max"})],
                         ids=["combsum", "weighted-equal", "combmnz", "combsum-minmax"])
def test_equal_multisets_of_scores_fuse_to_exactly_equal_scores(method, params, seed, device):
    """Summing in float32 made the result depend on the caption order and broke exact ties (R1 2.68 vs 2.58)."""
    s = _permuted_twins(seed)
    out = fuse(method, s, K, params={"norm": "none", **params}, device=device)
    np.testing.assert_array_equal(out[:, 5:10], out[:, 0:5])


def test_qpp_cli_fusion_overflow_exits_2_naming_the_run(tmp_path, capsys):
    import importlib.util
    from pathlib import Path
    spec = importlib.util.spec_from_file_location("qpp_script", Path(__file__).resolve().parents[1] / "qpp.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    s = _sims(n=20)
    s[:, 0] = 0.9
    s = (s * np.float32(3e38)).astype(np.float32)
    run = _run(tmp_path, "huge", s, splits=("val", "test"))
    before = sorted(tmp_path.rglob("*"))
    rc = run_cli(script.main, ["--run", str(run), "--features", "score", "--no-plots", "--n-resamples", "20"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and f"combsum of the run {run} overflows float32" in err[0], err
    assert sorted(tmp_path.rglob("*")) == before


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_torch_and_numpy_power_of_two_scales_agree_at_the_exponent_limits(dtype):
    """The torch back end clipped float64 exponents at 1023 (numpy: 1022), so its scale for the smallest numbers
    was the subnormal 2**-1023 instead of a normal number."""
    import torch

    from fusion.normalize import get_ops

    info = np.finfo(dtype)
    m = np.array([0.0, float(info.smallest_subnormal), float(info.tiny), 1.0, float(info.max) / 3, float(info.max),
                  np.inf, np.nan], dtype=dtype)
    want = get_ops("cpu").pow2_scale(m)
    got = get_ops("torch:cpu").pow2_scale(torch.from_numpy(m)).numpy()
    assert np.array_equal(got, want), (got, want)
    assert (np.abs(want) >= info.tiny).all()  # every scale is a normal number
