"""Numerics of fusion and metrics: NaN never ranked, no spurious overflow, tie-symmetric ranks, exact sums."""
import numpy as np
import pytest

from retrieval.metrics import gt_ranks_a2t, gt_ranks_t2a, t2a_metrics


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
