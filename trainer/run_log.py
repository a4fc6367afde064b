"""A run's log: ``train.log`` in the run folder, the console through tqdm (unless quiet), one line per epoch."""
from __future__ import annotations

import logging
import sys
from pathlib import Path

MONITOR = "geometric_mean_R1-R5-R10"  # the val t2a metric that selects the best epoch


def make_logger(run_dir: Path, quiet: bool) -> logging.Logger:
    """``train.log`` with timestamps, plus the console (unless quiet) through tqdm so that progress bars stay intact."""
    logger = logging.getLogger(f"train.{run_dir}")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    for h in list(logger.handlers):
        logger.removeHandler(h)
    fh = logging.FileHandler(run_dir / "train.log")
    fh.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    logger.addHandler(fh)
    if not quiet:
        sh = _TqdmHandler()
        sh.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(sh)
    return logger


class _TqdmHandler(logging.Handler):
    def emit(self, record):
        from tqdm import tqdm
        tqdm.write(self.format(record), file=sys.stderr)


def silent_logger() -> logging.Logger:
    """Ranks other than 0 of a distributed run: no train.log, no output."""
    logger = logging.getLogger("train.silent")
    logger.propagate = False
    logger.disabled = True
    return logger


def close_logger(logger: logging.Logger) -> None:
    """Close the log file (a run folder can be removed or reused right after)."""
    for h in list(logger.handlers):
        h.close()
        logger.removeHandler(h)


def format_metrics(m: dict[str, float]) -> str:
    """One direction's metrics on one log line."""
    return (f"R1 {m['R1']:.1f} R5 {m['R5']:.1f} R10 {m['R10']:.1f} R50 {m['R50']:.1f} "
            f"MedR {m['MedR']:.1f} MeanR {m['MeanR']:.1f} geom {m[MONITOR]:.2f}")

