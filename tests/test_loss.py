"""MaxMarginRankingLoss on a hand-made matrix (docs/TRAINING.md)."""
from __future__ import annotations

import pytest
import torch

from model.loss import MaxMarginRankingLoss


def relu(v: float) -> float:
    return max(0.0, v)


def test_hand_made_matrix_fix_norm():
    S = torch.tensor([[0.9, 0.8, 0.1],
                      [0.3, 0.5, 0.6],
                      [0.0, 0.2, 0.7]])
    m = 0.2
    # caption i vs wrong clip j: m - S_ii + S_ij ; clip i vs wrong caption j: m - S_ii + S_ji
    terms = [
        relu(m - 0.9 + 0.8), relu(m - 0.9 + 0.1),   # i=0: S01, S02
        relu(m - 0.5 + 0.3), relu(m - 0.5 + 0.6),   # i=1: S10, S12
        relu(m - 0.7 + 0.0), relu(m - 0.7 + 0.2),   # i=2: S20, S21
        relu(m - 0.9 + 0.3), relu(m - 0.9 + 0.0),   # i=0: S10, S20
        relu(m - 0.5 + 0.8), relu(m - 0.5 + 0.2),   # i=1: S01, S21
        relu(m - 0.7 + 0.1), relu(m - 0.7 + 0.6),   # i=2: S02, S12
    ]
    expected = sum(terms) / (2 * 3 * (3 - 1))
    assert expected == pytest.approx((0.1 + 0.0 + 0.0 + 0.3 + 0.0 + 0.0 + 0.0 + 0.0 + 0.5 + 0.0 + 0.0 + 0.1) / 12)
    loss = MaxMarginRankingLoss(margin=m, fix_norm=True)(S)
    assert float(loss) == pytest.approx(expected, abs=1e-7)


def test_without_fix_norm_the_diagonal_terms_count():
    S = torch.tensor([[0.9, 0.8], [0.3, 0.5]])
    m = 0.2
    off = relu(m - 0.9 + 0.8) + relu(m - 0.5 + 0.3) + relu(m - 0.9 + 0.3) + relu(m - 0.5 + 0.8)
    expected = (off + 4 * m) / (2 * 2 * 2)  # the 2·B diagonal terms are each relu(m) = m
    assert float(MaxMarginRankingLoss(m, fix_norm=False)(S)) == pytest.approx(expected, abs=1e-7)


def test_gradient_flows_and_perfect_separation_is_zero():
    S = (torch.eye(4) * 0.9).requires_grad_(True)
    loss = MaxMarginRankingLoss(0.2)(S)
    assert float(loss.detach()) == 0.0
    S2 = torch.zeros(4, 4, requires_grad=True)
    loss2 = MaxMarginRankingLoss(0.2)(S2)
    assert float(loss2.detach()) == pytest.approx(0.2)
    loss2.backward()
    assert S2.grad is not None and float(S2.grad.diagonal().sum()) < 0


def test_a_batch_of_one_has_no_pair_and_zero_loss():
    """B = 1: no off-diagonal pair, so the fix_norm mean is over nothing: 0 (not the 2m of the diagonal terms)."""
    s = torch.tensor([[0.3]], requires_grad=True)
    loss = MaxMarginRankingLoss(0.2)(s)
    assert float(loss.detach()) == 0.0
    loss.backward()
    assert float(s.grad) == 0.0


def test_defaults_are_the_documented_ones():
    """docs/TRAINING.md: max-margin 0.2 with fix_norm."""
    loss = MaxMarginRankingLoss()
    assert (loss.margin, loss.fix_norm) == (0.2, True)
