"""Max-margin ranking loss (docs/TRAINING.md)."""
from __future__ import annotations

import torch
import torch.nn as nn


class MaxMarginRankingLoss(nn.Module):
    """Bidirectional hinge loss over a square ``(B, B)`` sims matrix (rows captions, columns clips,
    positives on the diagonal).

    For every ordered pair i != j: ``max(0, m - S_ii + S_ij)`` (caption i vs wrong clip j) and
    ``max(0, m - S_ii + S_ji)`` (clip i vs wrong caption j). With ``fix_norm`` the loss is the mean over
    the 2·B·(B-1) off-diagonal terms; without it the 2·B diagonal terms (each equal to m) are averaged in too,
    as in the original.
    """

    def __init__(self, margin: float = 0.2, fix_norm: bool = True):
        super().__init__()
        self.margin = margin
        self.fix_norm = fix_norm

    def forward(self, sims: torch.Tensor) -> torch.Tensor:
        n = sims.shape[0]
        if sims.shape != (n, n):
            raise ValueError(f"expected a square sims matrix, got {tuple(sims.shape)}")
        diag = sims.diagonal()[:, None]
        h_text = torch.relu(self.margin - diag + sims)      # [i, j] = m - S_ii + S_ij
        h_audio = torch.relu(self.margin - diag + sims.t())  # [i, j] = m - S_ii + S_ji
        total = h_text + h_audio
        if self.fix_norm:
            off = ~torch.eye(n, dtype=torch.bool, device=sims.device)
            return total[off].sum() / (2 * n * (n - 1)) if n > 1 else total.sum() * 0
        return total.sum() / (2 * n * n)
