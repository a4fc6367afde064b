"""CE / MoEE text-to-audio retrieval model (docs/TRAINING.md)."""
from model.build import build_model, count_parameters
from model.ce import CENet
from model.loss import MaxMarginRankingLoss

__all__ = ["CENet", "MaxMarginRankingLoss", "build_model", "count_parameters"]
