"""Value rules of the config keys: the valid range of every numeric key, and the keys this toolkit does not act on.

``utils.config`` checks that a key exists and has the right JSON type; this module checks that its VALUE makes
sense, so that ``lr_scheduler.args.gamma=-1`` or ``data_loader.args.max_tokens.text=0`` stop with one line
instead of training a silently wrong model. :func:`check_values` runs on every resolved config (``load_config``)
and again on a run's saved ``config.json`` before training or resuming.

* :data:`RANGES`: dotted key (``*`` matches any one key) -> :class:`Range`. Every numeric key of
  ``configs/base_config.json`` has one (a test enforces it); every float must also be finite.
* :data:`FIXED`: keys that exist for compatibility with the original's config files but that this toolkit does not
  act on. Setting one to anything but its listed value is rejected (one line naming the key and why), so nobody
  silently gets the default. docs/TRAINING.md "Config keys" lists the decisions.
"""
from __future__ import annotations

import fnmatch
import json
import math
from dataclasses import dataclass
from typing import Any, Iterator

from utils.errors import UserError


@dataclass(frozen=True)
class Range:
    low: float | None = None
    high: float | None = None
    low_open: bool = False   # value > low (instead of >=)
    high_open: bool = False  # value < high (instead of <=)
    why: str = ""

    def problem(self, value: float) -> str | None:
        if isinstance(value, float) and not math.isfinite(value):
            return "must be a finite number"
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return f"must be {'>' if self.low_open else '>='} {_num(self.low)}" + (f" ({self.why})" if self.why else "")
        if self.high is not None and (value >= self.high if self.high_open else value > self.high):
            return f"must be {'<' if self.high_open else '<='} {_num(self.high)}" + (f" ({self.why})" if self.why else "")
        return None


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


FLAG = Range(0, 1, why="0 or 1")
SEED = Range(0, 2**32 - 1)

RANGES: dict[str, Range] = {
    "n_gpu": Range(0),
    "seed": SEED,
    "arch.args.mimic_ce_dims": FLAG,
    "arch.args.use_mish": FLAG,
    "arch.args.use_bn_reason": FLAG,
    "arch.args.include_self": FLAG,
    "arch.args.num_g_layers": Range(1),
    "arch.args.num_h_layers": Range(0),
    "arch.args.ce_shared_dim": Range(1),
    "arch.args.vlad_clusters.*": Range(1),
    "arch.args.ghost_clusters.*": Range(0),
    "optimizer.args.lr": Range(0, low_open=True),
    "optimizer.args.weight_decay": Range(0),
    "loss.args.margin": Range(0),
    "lr_scheduler.args.step_size": Range(1),
    "lr_scheduler.args.gamma": Range(0, 1, low_open=True),
    "data_loader.args.batch_size": Range(2, why="BatchNorm needs at least 2 clips per batch"),
    "data_loader.args.num_test_captions": Range(1, 5, why="CLOTHO has 5 captions per clip"),
    "data_loader.args.trn_cat": Range(0),
    "data_loader.args.num_workers": Range(0),
    "data_loader.args.text_dropout": Range(0, 1, high_open=True),
    "data_loader.args.max_tokens.*": Range(1),
    "data_loader.args.synthetic.seed": SEED,
    "trainer.epochs": Range(1),
    "trainer.save_period": Range(1),
    "trainer.val_freq": Range(1),
    "eval_settings.data_loader.args.num_test_captions": Range(1, 5, why="CLOTHO has 5 captions per clip"),
}

# key -> (the only accepted value, why). Values are compared after JSON normalisation.
FIXED: dict[str, tuple[Any, str]] = {
    "n_gpu": (1, "devices are chosen with --device (and torchrun for several processes)"),
    "disable_nan_checks": (False, "a non-finite loss or similarity always stops the run: metrics of a NaN model "
                                  "are meaningless"),
    "experts.text_agg": ("vlad", "the text branch is NetVLAD pooling"),
    "experts.drop_feats": ("", "list the experts to use in experts.modalities instead"),
    "arch.type": ("CENet", "CE and MoEE are both CENet (MoEE: arch.args.use_ce=\"\")"),
    "arch.args.test_caption_mode": ("indep", "each caption is scored independently, as the original does on CLOTHO"),
    "arch.args.randomise_feats": ("", "feature randomisation ablations are not implemented"),
    "loss.type": ("MaxMarginRankingLoss", "the only loss implemented"),
    "metrics": (["t2v_metrics", "v2t_metrics"], "both directions are always evaluated"),
    "data_loader.type": ("ExpertDataLoader", "the only loader"),
    "data_loader.args.dataset_name": ("CLOTHO", "the only data set layout"),
    "data_loader.args.split_name": ("val", "training always selects the epoch on val and evaluates on test"),
    "data_loader.args.fuse_captions": (False, "caption fusion is a separate stage: fusion.py"),
    "data_loader.args.trn_cat": (0, "not implemented"),
    "data_loader.args.text_dropout": (0.0, "text dropout is not implemented (the original's CLOTHO configs use 0)"),
    "trainer.save_only_best": (True, "only the best epoch's weights are kept (trained_model.pth), plus the "
                                     "resume checkpoint"),
    "trainer.val_freq": (1, "validation runs after every epoch (it selects the best epoch)"),
    "trainer.monitor": ("max val_t2v_metrics_geometric_mean_R1-R5-R10", "the best epoch is always selected by the "
                                                                         "val t2a geometric mean of R1/R5/R10"),
    "eval_mode": ("test_run", "the only evaluation mode"),
    "eval_settings.data_loader.args.split_name": ("test", "the final evaluation is on the test split"),
    "eval_settings.data_loader.args.num_test_captions": (5, "the test evaluation uses all 5 captions of each clip"),
    "eval_settings.tester.save_dir": ("data/saved/", "results go to the run folder under trainer.save_dir"),
}


def check_values(config: dict, where: str = "config") -> None:
    """Raise ``UserError("<where>: <key>: <value>: <problem>")`` for the first value out of range or not supported."""
    for key, value in _leaves(config):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        rule = rule_for(key)
        problem = rule.problem(value) if rule is not None else Range().problem(value)
        if problem:
            raise UserError(f"{where}: {key}: {json.dumps(value) if math.isfinite(value) else value}: {problem}")
    for key, (allowed, why) in FIXED.items():
        value = _get(config, key)
        if value is _MISSING or _norm(value) == _norm(allowed):
            continue
        raise UserError(f"{where}: {key}: {json.dumps(value)}: not supported, only {json.dumps(allowed)} ({why})")
    mods = _get(config, "experts.modalities")
    if isinstance(mods, list) and len(set(map(str, mods))) != len(mods):
        twice = next(m for i, m in enumerate(mods) if m in mods[:i])
        raise UserError(f"{where}: experts.modalities: {json.dumps(mods)}: {twice!r} is listed twice")


def rule_for(key: str) -> Range | None:
    if key in RANGES:
        return RANGES[key]
    return next((r for pattern, r in RANGES.items() if "*" in pattern and fnmatch.fnmatchcase(key, pattern)), None)


def _leaves(node: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _leaves(v, f"{prefix}{k}.")
    else:
        yield prefix.rstrip("."), node


_MISSING = object()


def _get(config: dict, dotted: str) -> Any:
    node: Any = config
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return _MISSING
        node = node[part]
    return node


def _norm(value: Any) -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return repr(float(value))  # 0 and 0.0 are the same setting
    return json.dumps(value, sort_keys=True)
