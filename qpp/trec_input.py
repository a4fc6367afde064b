"""QPP on TREC runs: ``qpp.py --trec-run RUN --qrels QRELS [--fit-trec-run RUN --fit-qrels QRELS | --cv K]``.

The score-based QPP features (``score``, ``variation``) need only each query's ranked list with scores, so a run
of another tool works as long as its qrels say which clip each caption query describes (fusion.trec_input's rules:
one relevant clip per query, the same number K >= 2 of queries per clip). Both files become a small run folder
``<out>/input/sims/{test,val}.npy + .json`` (inspectable, evaluable by fusion.py), which :func:`qpp.run.run_qpp`
then reads like any run. Everything is validated before anything is written.
"""
from __future__ import annotations

from pathlib import Path

from fusion.trec_input import manifest_from_qrels, sims_from_trec_run
from retrieval.sims_io import save_sims
from utils.errors import UserError
from utils.io import write_json
from utils.outputs import write_run_record

TREC_FEATURES = ("score", "variation")  # the groups that need no caption text


def load_trec_split(run: str, qrels: str, split: str):
    manifest = manifest_from_qrels(qrels, split)
    if manifest.captions_per_clip < 2:
        raise UserError(f"{qrels}: every clip has {manifest.captions_per_clip} query; QPP needs several caption "
                        "queries per clip")
    manifest.source = {"trec_run": str(run), "qrels": str(qrels)}
    return sims_from_trec_run(run, manifest), manifest


def materialise_trec_input(run: str, qrels: str, fit_run: str | None, fit_qrels: str | None,
                           out_dir: str | Path) -> Path:
    """Validate the TREC files and write them as ``<out_dir>/input`` (a run folder); returns that folder."""
    if (fit_run is None) != (fit_qrels is None):
        raise UserError("--fit-trec-run and --fit-qrels go together")
    test = load_trec_split(run, qrels, "test")
    fit = load_trec_split(fit_run, fit_qrels, "val") if fit_run else None
    if fit is not None and fit[1].captions_per_clip != test[1].captions_per_clip:
        raise UserError(f"{fit_qrels}: {fit[1].captions_per_clip} queries per clip, {qrels} has "
                        f"{test[1].captions_per_clip}")
    run_dir = Path(out_dir) / "input"
    for sims, manifest in (test,) + ((fit,) if fit else ()):
        save_sims(run_dir / "sims", manifest.split, sims, manifest)
    write_run_record(run_dir, "qpp.py --trec-run")  # a run folder like train.py's: recorded, then metrics.json
    write_json(run_dir / "metrics.json", {"from_trec": {"test": str(run), "val": fit_run}})
    return run_dir
