"""Each fusion method pinned on hand-computed matrices (expected values written as formulas)."""
import inspect

import numpy as np
import pytest

from fusion import methods
from fusion.normalize import NORMALIZERS, NumpyOps, get_ops
from fusion.registry import FUSERS, fuse, get_fuser
from utils.errors import UserError

# 2 clips x K=2 captions, 3 candidate clips; rows clip-major
S = np.array([[0.9, 0.5, 0.1],
              [0.2, 0.8, 0.3],
              [0.4, 0.4, 0.7],   # tie between columns 0 and 1: both get the mean of ranks 2 and 3
              [0.1, 0.6, 0.5]], dtype=np.float32)
K = 2


def test_ranks_one_sort_ties_share_the_mean_position():
    x = np.array([[1, 2, 2, 0, 2, -0.0, 0.0, -1, np.inf, -np.inf]], dtype=np.float32)
    expected = [[5, 3, 3, 7, 3, 7, 7, 9, 1, 10]]  # scipy.stats.rankdata(-x) ("average"); -0.0 == 0.0
    np.testing.assert_array_equal(NumpyOps().ranks(x), expected)
    np.testing.assert_array_equal(NumpyOps().ranks(x.astype(np.float64)), expected)  # the argsort path


def test_combsum_and_max_min_med():
    np.testing.assert_allclose(methods.combsum(S, K), [[0.9 + 0.2, 0.5 + 0.8, 0.1 + 0.3],
                                                       [0.4 + 0.1, 0.4 + 0.6, 0.7 + 0.5]], rtol=1e-6)
    np.testing.assert_allclose(methods.combmax(S, K), [[0.9, 0.8, 0.3], [0.4, 0.6, 0.7]])
    np.testing.assert_allclose(methods.combmin(S, K), [[0.2, 0.5, 0.1], [0.1, 0.4, 0.5]])
    np.testing.assert_allclose(methods.combmed(S, K), [[0.55, 0.65, 0.2], [0.25, 0.5, 0.6]], rtol=1e-6)


def test_rrf_borda_isr_formulas():
    # ranks: row0 [1,2,3] row1 [3,1,2] row2 [2|3,2|3,1] (tie: the mean of the values of ranks 2 and 3) row3 [3,1,2]
    def tie(f):
        return (f(2) + f(3)) / 2

    def rrf(r):
        return 1 / (60 + r)
    np.testing.assert_allclose(methods.rrf(S, K), [
        [rrf(1) + rrf(3), rrf(2) + rrf(1), rrf(3) + rrf(2)],
        [tie(rrf) + rrf(3), tie(rrf) + rrf(1), rrf(1) + rrf(2)]], rtol=1e-6)
    np.testing.assert_allclose(methods.rrf(S, K, k=0)[0, 0], 1 / 1 + 1 / 3, rtol=1e-6)
    n = 3

    def borda(r):
        return n - r + 1
    np.testing.assert_allclose(methods.borda(S, K), [
        [borda(1) + borda(3), borda(2) + borda(1), borda(3) + borda(2)],
        [tie(borda) + borda(3), tie(borda) + borda(1), borda(1) + borda(2)]])

    def isr(r):
        return 1 / r**2
    np.testing.assert_allclose(methods.isr(S, K), [
        [isr(1) + isr(3), isr(2) + isr(1), isr(3) + isr(2)],
        [tie(isr) + isr(3), tie(isr) + isr(1), isr(1) + isr(2)]], rtol=1e-6)


def test_combmnz_depth():
    # depth 1: only each row's top clip is retrieved; min-max of row0 = [1, .5, 0], row1 = [0, 1, .2]
    out = methods.combmnz(S, K, depth=1)
    np.testing.assert_allclose(out[0], [1 * 1.0, 1 * 1.0, 0.0], rtol=1e-6)
    # depth 3 = N: everything retrieved, MNZ = K x CombSum of min-max rows
    mm = (S - S.min(1, keepdims=True)) / (S.max(1, keepdims=True) - S.min(1, keepdims=True))
    np.testing.assert_allclose(methods.combmnz(S, K, depth=3), K * mm.reshape(2, K, 3).sum(1), rtol=1e-6)
    # depth 2 on row 2 (tie 0.4/0.4 at the cut-off): both columns are retrieved (no column bias)
    row2, row3 = mm[2], mm[3]
    assert out.shape == (2, 3)
    np.testing.assert_allclose(methods.combmnz(S, K, depth=2)[1],
                               [1 * (row2[0] + 0), 2 * (row2[1] + row3[1]), 2 * (row2[2] + row3[2])], rtol=1e-6)


def test_weighted_combsum_and_fork_weights():
    w = np.array([1.0, 0.0, 0.5, 2.0])
    np.testing.assert_allclose(methods.weighted_combsum(S, K, w),
                               [[0.9, 0.5, 0.1], [0.5 * 0.4 + 2 * 0.1, 0.5 * 0.4 + 2 * 0.6, 0.5 * 0.7 + 2 * 0.5]],
                               rtol=1e-6)
    legacy = methods.fork_rank_weights(np.array([1, 2, 3, 4, 5, 5, 4, 3, 2, 1]), 5)
    np.testing.assert_allclose(legacy[:5], [1 / 15, 2 / 15, 3 / 15, 4 / 15, 5 / 15])
    assert legacy[0] == legacy[:5].min()  # the predicted-best caption (rank 1) gets the SMALLEST weight
    with pytest.raises(ValueError):
        methods.fork_rank_weights(np.array([0.5, 2, 3, 4, 5]), 5)


def test_norms():
    x = np.array([[1.0, 3.0, 2.0], [5.0, 5.0, 5.0]], dtype=np.float32)
    ops = NumpyOps()
    np.testing.assert_allclose(NORMALIZERS["min-max"](ops, x), [[0, 1, 0.5], [0, 0, 0]])
    np.testing.assert_allclose(NORMALIZERS["z-score"](ops, x)[0], (x[0] - 2) / np.std([1, 3, 2]), rtol=1e-6)
    np.testing.assert_allclose(NORMALIZERS["rank"](ops, x), [[(3 - 3) / 2, (3 - 1) / 2, (3 - 2) / 2], [0.5, 0.5, 0.5]])
    np.testing.assert_allclose(methods.combsum(S, K, norm="rank")[0], [(2 + 0) / 2, (1 + 2) / 2, (0 + 1) / 2])


def _loop_combsum_rrf(sims, k_caps, rows):
    n = sims.shape[1]
    cs = [[0.0] * n for _ in rows]
    rr = [[0.0] * n for _ in rows]
    for i, clip_rows in enumerate(rows):
        for r in clip_rows:
            for j in range(n):
                cs[i][j] += float(sims[r, j])
                # tied clips share the mean of 1/(60 + rank) over the ranks their tie group occupies
                better = sum(float(sims[r, c]) > float(sims[r, j]) for c in range(n))
                tied = sum(float(sims[r, c]) == float(sims[r, j]) for c in range(n))
                rr[i][j] += sum(1.0 / (60 + better + t + 1) for t in range(tied)) / tied
    return np.array(cs), np.array(rr)


def test_against_loops_shuffled_rows_ties_and_chunks():
    rng = np.random.default_rng(1)
    n, k = 7, 3
    sims = np.round(rng.random((n * k, n)), 1).astype(np.float32)  # many ties
    perm = rng.permutation(n * k)
    shuffled = sims[perm]
    gt = np.repeat(np.arange(n), k)[perm]
    rows = methods.group_rows(gt, n, k)
    assert rows is not None and methods.group_rows(np.repeat(np.arange(n), k), n, k) is None
    cs, rr = _loop_combsum_rrf(shuffled, k, rows)
    np.testing.assert_allclose(methods.combsum(shuffled, k, rows=rows, chunk_clips=2), cs, rtol=1e-5)
    np.testing.assert_allclose(methods.rrf(shuffled, k, rows=rows, chunk_clips=3, dtype=np.float64), rr, rtol=1e-12)
    np.testing.assert_allclose(methods.rrf(sims, k), methods.rrf(shuffled, k, rows=rows), rtol=1e-6)
    with pytest.raises(ValueError, match="column"):
        methods.group_rows(gt[:-1], n, k)


def test_torch_backend_matches_numpy():
    pytest.importorskip("torch")
    rng = np.random.default_rng(2)
    sims = np.round(rng.random((5 * 6, 6)), 1).astype(np.float32)
    w = rng.random(30)
    for name in FUSERS:
        a = fuse(name, sims, 5, params={"weights": w, "depth": 3})
        b = fuse(name, sims, 5, params={"weights": w, "depth": 3}, device="torch:cpu")
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6, err_msg=name)


def test_registry_errors_list_valid_names():
    with pytest.raises(UserError, match="valid: combsum"):
        get_fuser("combsux")
    with pytest.raises(UserError, match="min-max"):
        methods.combsum(S, K, norm="minmax")
    with pytest.raises(UserError):
        get_ops("gpu")


@pytest.mark.parametrize("k_caps", [2, 4])
@pytest.mark.parametrize("norm", list(NORMALIZERS))
def test_torch_backend_matches_numpy_for_every_norm_and_even_k(norm, k_caps):
    """The torch kernels (population std for z-score, numpy's mean-of-the-two-middle median for even K) against
    the numpy ones: the registry test above only runs K = 5 with no normalisation."""
    pytest.importorskip("torch")
    sims = np.random.default_rng(3).standard_normal((k_caps * 6, 6)).astype(np.float32)
    for name in ("combsum", "combmed", "combmnz"):
        a = fuse(name, sims, k_caps, params={"norm": norm, "depth": 3})
        b = fuse(name, sims, k_caps, params={"norm": norm, "depth": 3}, device="torch:cpu")
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6, err_msg=f"{name} {norm}")
    x = sims.reshape(6, k_caps, 6).astype(np.float64)
    np.testing.assert_allclose(fuse("combmed", sims, k_caps, device="torch:cpu"), np.median(x, axis=1), rtol=1e-6)
    z = (x - x.mean(-1, keepdims=True)) / x.std(-1, ddof=0, keepdims=True)
    np.testing.assert_allclose(fuse("combsum", sims, k_caps, params={"norm": "z-score"}, device="torch:cpu"),
                               z.sum(1), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("device", ["cpu", "torch:cpu"])
def test_normalising_subnormal_and_lopsided_rows(device):
    """Rows rescaled by a power of two before normalising: subnormal scores (the scale is clipped to a finite
    power of two) and rows whose largest magnitude is the minimum (-1e30 beside 1e-30) keep exact float64 values."""
    if device != "cpu":
        pytest.importorskip("torch")
    tiny = np.float32(2.0 ** -149)  # the smallest subnormal float32
    x = np.array([[0, 3, 6, 12], [-1e30, 0, 1e-30, 5e-31]], dtype=np.float32)
    x[0] *= tiny
    as64 = x.astype(np.float64)
    mm = (as64 - as64.min(1, keepdims=True)) / np.ptp(as64, axis=1, keepdims=True)
    z = (as64 - as64.mean(1, keepdims=True)) / as64.std(1, keepdims=True)
    for norm, expected in (("min-max", mm), ("z-score", z)):  # K = 1: the fused rows are the normalised rows
        np.testing.assert_allclose(fuse("combsum", x, 1, params={"norm": norm}, device=device), expected,
                                   rtol=1e-5, atol=1e-6, err_msg=norm)


def test_cli_defaults_are_the_documented_ones():
    """--depth 100 (CombMNZ), --rrf_k 60 (the fork's), --norm none, TREC depth 100, 10000 resamples."""
    from fusion.run import build_parser

    args = build_parser().parse_args(["--sims", "x.npy"])
    assert (args.depth, args.rrf_k, args.norm, args.trec_depth, args.resamples) == (100, 60, "none", 100, 10_000)
    assert (args.systems_norm, args.captions_method, args.weights_step) == ("min-max", "combsum", 0.1)
    assert (args.depth, args.rrf_k) == tuple(
        inspect.signature(f).parameters[p].default for f, p in ((methods.combmnz, "depth"), (methods.rrf, "k")))


def test_tied_rows_redone_in_several_blocks_match_scipy(monkeypatch):
    """Rows with ties are re-averaged in blocks of _TIE_BLOCK scores: with tiny blocks (one row each), every tied
    row still gets scipy's average ranks (float32 key path and float64 argsort path)."""
    from scipy.stats import rankdata

    import fusion.normalize as normalize

    monkeypatch.setattr(normalize, "_TIE_BLOCK", 1)
    x = np.random.default_rng(6).integers(0, 4, (12, 7)).astype(np.float32)
    want = np.array([rankdata(-row) for row in x])
    np.testing.assert_array_equal(NumpyOps().ranks(x), want)
    np.testing.assert_array_equal(NumpyOps().ranks(x.astype(np.float64)), want)
