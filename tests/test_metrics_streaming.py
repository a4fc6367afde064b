"""Streaming evaluation (retrieval.streaming) gives exactly the in-memory metrics, without the matrix."""
import numpy as np
import pytest

from retrieval import streaming
from retrieval.metrics import both_directions, clip_major_gt_cols, gt_ranks_a2t, gt_ranks_t2a
from retrieval.streaming import embedding_scorer, matrix_scorer, stream_gt_ranks, streaming_metrics


@pytest.mark.parametrize("row_block, col_block", [(None, None), (7, 5), (64, 3), (1, 1000)])
@pytest.mark.parametrize("clip_major", [True, False])
def test_streamed_ranks_equal_in_memory_with_ties(row_block, col_block, clip_major):
    rng = np.random.default_rng(0)
    n, k = 37, 4
    sims = np.round(rng.standard_normal((n * k, n)), 1).astype(np.float32)  # many ties
    gt = clip_major_gt_cols(n, k) if clip_major else rng.integers(0, n - 3, n * k)  # some clips without captions
    for direction, ref in (("t2a", gt_ranks_t2a(sims, gt)), ("a2t", gt_ranks_a2t(sims, gt))):
        got = stream_gt_ranks(matrix_scorer(sims), sims.shape, gt, direction, row_block, col_block)
        np.testing.assert_array_equal(got, ref)
        threaded = stream_gt_ranks(matrix_scorer(sims), sims.shape, gt, direction, row_block, col_block, workers=3)
        np.testing.assert_array_equal(threaded, ref)


def test_embeddings_without_the_matrix(monkeypatch):
    """Tiles are the only score arrays ever built; every relevant score comes from the tile it is counted in."""
    rng = np.random.default_rng(1)
    q, a = rng.standard_normal((300, 8)).astype(np.float32), rng.standard_normal((90, 8)).astype(np.float32)
    gt = rng.integers(0, 90, 300)
    scorer = embedding_scorer(q, a)
    shapes = []

    def spy(q0, q1, c0, c1):
        shapes.append((q1 - q0, c1 - c0))
        return scorer(q0, q1, c0, c1)

    monkeypatch.setattr(streaming, "CACHE_BYTES", 0)  # no cache: relevant tiles are recomputed, still exact
    got = streaming_metrics(spy, (300, 90), gt, row_block=50, col_block=20)
    assert max(r * c for r, c in shapes) == 50 * 20
    # the full product of the same tiles, in memory, for reference
    full = np.block([[scorer(r, min(r + 50, 300), c, min(c + 20, 90)) for c in range(0, 90, 20)]
                     for r in range(0, 300, 50)])
    assert got == both_directions(full, gt)


def test_bad_arguments():
    sims = np.zeros((4, 2), np.float32)
    with pytest.raises(ValueError, match="gt_cols"):
        stream_gt_ranks(matrix_scorer(sims), sims.shape, np.array([0, 1, 2, 0]))
    with pytest.raises(ValueError, match="direction"):
        stream_gt_ranks(matrix_scorer(sims), sims.shape, np.array([0, 1, 1, 0]), "x2y")
    with pytest.raises(ValueError, match="returned shape"):
        stream_gt_ranks(lambda *a: np.zeros((1, 1)), sims.shape, np.array([0, 1, 1, 0]))
