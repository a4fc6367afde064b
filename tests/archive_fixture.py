"""Helpers for tests on the genuine hickle-4 fixture (tests/fixtures/clotho-hickle4, scripts/make_hickle4_fixture.py).

Bad-input variants are made by editing a COPY in place: values inside the hickle-4 files are changed with h5py (the
file keeps hickle 4's layout), pickles are re-written with protocol 3 (Python 3.7's default).
"""
from __future__ import annotations

import json
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
FIXTURE = REPO_ROOT / "tests" / "fixtures" / "clotho-hickle4"
FIXTURE_CONFIG = REPO_ROOT / "configs" / "clotho-fixture" / "hickle4-ce.json"
PROVENANCE = json.loads((FIXTURE / "PROVENANCE.json").read_text(encoding="utf-8"))
EXPERT_FILES = {"audio": "aggregated_audio/vggish-raw.hickle", "vggsound": "aggregated_vggsound/vggsound-raw.hickle"}
W2V_FILE = "text_embeddings/w2v.pkl"


def expected() -> dict[str, np.ndarray]:
    with np.load(FIXTURE / "expected.npz") as npz:
        return {k: npz[k] for k in npz.files}


def copy_fixture(dest: Path) -> Path:
    """A writable copy of the fixture's data_dir; returns it (root_feat is ``dest/structured-symlinks``)."""
    shutil.copytree(FIXTURE, dest)
    return dest


def present_clip(expert: str, split: str) -> str:
    """The first clip of ``split`` that has ``expert`` (not the NaN-scalar marker)."""
    return next(c for c in PROVENANCE["splits"][split] if PROVENANCE["missing"].get(expert) != c)


def hickle4_dataset_name(cid: str) -> str:
    """Where hickle 4 stores the value of dict key ``cid``: data/<repr(key), '/' as two backslashes>/data."""
    return "data/" + repr(cid).replace("/", "\\\\") + "/data"


def set_hickle4_value(data_dir: Path, expert: str, cid: str, index: tuple, value: float) -> None:
    import h5py

    with h5py.File(data_dir / "structured-symlinks" / EXPERT_FILES[expert], "r+") as fh:
        ds = fh[hickle4_dataset_name(cid)]
        arr = ds[()]
        arr[index] = value
        ds[...] = arr


def set_w2v_value(data_dir: Path, cid: str, caption: int, index: tuple, value: float) -> None:
    path = data_dir / "structured-symlinks" / W2V_FILE
    with open(path, "rb") as fh:
        w2v = pickle.load(fh, encoding="latin1")
    w2v[cid][caption][index] = value
    with open(path, "wb") as fh:
        pickle.dump(w2v, fh, protocol=3)


def cli_args(data_dir: Path, *extra: str) -> list[str]:
    return [str(FIXTURE_CONFIG), "--custom_args", f"data_loader.args.data_dir={data_dir}", *extra]


def run_module(args: list[str], timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout)


def assert_one_line_error(stderr: str, *needles: str) -> str:
    """stderr is exactly one 'error: ...' line containing every needle, no traceback; returns the line."""
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: "), stderr
    assert "Traceback" not in stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]
