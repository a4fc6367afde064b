"""Write the completion record ``complete.json`` of a finished training run made before train.py wrote one.

Readers (fusion.py, qpp.py, search.py) refuse a run folder without ``complete.json``: without the recorded sha256 a
matrix copied over another (val over test) or a half-copied folder cannot be detected (docs/FORMATS.md). A run
trained by an older version of the toolkit has ``metrics.json`` but no record; after checking that its files are the
ones training wrote, record them once::

    python scripts/record_run.py data/saved/<experiment>/<run-id>

The script records the files as they are now, so it runs every check it can first: the run is finished
(``metrics.json``), has no record yet, its ``config.json`` and ``trained_model.pth`` exist, every ``sims/<split>``
passes the readers' checks (manifest vs matrix, the manifest's ``split`` field, its config hash against
``config.json``, its clip ids against ``<split>_list.txt`` when the data is at hand), and no two splits hold the
same matrix. What it cannot see is a matrix replaced by another of the same run and split: only record a run you
trust.
"""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from utils.cli import ArgumentParser  # noqa: E402
from utils.errors import UserError, run_cli  # noqa: E402


def record_run(run_dir: str | Path) -> dict:
    import numpy as np

    from retrieval.sims_io import load_unrecorded_run_sims, same_matrix
    from utils.outputs import RECORD, RUN_MODEL, write_run_record
    from utils.paths import COMPLETE_MARKER

    run = Path(run_dir)
    if not run.is_dir():
        raise UserError(f"{run}: run folder not found")
    if not (run / "config.json").is_file():  # train.py writes it first: without it, this is no run folder
        raise UserError(f"{run}: not a run folder (no config.json; a run folder is data/saved/<experiment>/<run-id>)")
    if not (run / COMPLETE_MARKER).is_file():
        raise UserError(f"{run}: not a finished run (no {COMPLETE_MARKER}); finish it with train.py --resume {run}")
    if (run / RECORD).exists():
        raise UserError(f"{run / RECORD}: the run is already recorded (nothing to do)")
    for name in ("config.json", RUN_MODEL):
        if not (run / name).is_file():
            raise UserError(f"{run / name}: missing; a training run folder has it")
    splits = sorted(p.stem for p in (run / "sims").glob("*.npy")) if (run / "sims").is_dir() else []
    if not splits:
        raise UserError(f"{run / 'sims'}: no sims/<split>.npy to record")
    seen: list[tuple[str, np.ndarray]] = []
    for split in splits:
        sims, _ = load_unrecorded_run_sims(run, split)
        for other, other_sims in seen:
            if same_matrix(other_sims, sims):
                raise UserError(f"{run / 'sims' / (split + '.npy')}: the same matrix as sims/{other}.npy (one copied "
                                "over the other?); not recorded")
        seen.append((split, sims))
    return write_run_record(run, "scripts/record_run.py")


def main(argv=None) -> None:
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", help="a finished training run folder without complete.json")
    args = parser.parse_args(argv)
    record = record_run(args.run)
    print(f"recorded {len(record['files'])} files in {Path(args.run) / 'complete.json'}")


if __name__ == "__main__":
    sys.exit(run_cli(main))
