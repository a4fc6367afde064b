"""A run's saved split index (model/run_index.py) is stale exactly when something it was built from changed: every
data file the split is read from, the checkpoint's config hash; --rebuild-index rebuilds a current index. The run
reads a private copy of the tiny set, so touching its files cannot disturb other tests."""
from __future__ import annotations

import copy
import dataclasses
import os
import shutil

import numpy as np
import pytest


@pytest.fixture(scope="module")
def own_run(_tiny_config_resolved, tiny_data_dir, tmp_path_factory):
    from tests.conftest import TINY_CONFIG_PATH
    from trainer.trainer import fit

    data = tmp_path_factory.mktemp("data") / "tiny"
    shutil.copytree(tiny_data_dir, data)
    cfg = copy.deepcopy(_tiny_config_resolved)
    cfg["data_loader"]["args"]["data_dir"] = str(data)
    cfg["trainer"]["save_dir"] = str(tmp_path_factory.mktemp("saved"))
    cfg["trainer"]["epochs"] = 1
    return fit(cfg, TINY_CONFIG_PATH, "cpu", quiet=True, threads=1)


def _open(rm, **kw):
    from model.run_index import open_run_index

    logs = []
    index, info = open_run_index(rm, "test", log=logs.append, **kw)
    return index, info["status"], "\n".join(logs)


def _touch(path):
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))


@pytest.mark.parametrize("rel", ["test_list.txt", "structured-symlinks/raw-captions.pkl",
                                 "aggregated_audio/vggish-raw.hickle", "aggregated_vggsound/vggsound-raw.hickle"])
def test_a_changed_data_file_of_the_split_makes_its_index_stale(own_run, rel):
    from data.clotho import root_feat_dir
    from model.query import load_run_model

    rm = load_run_model(own_run)
    _open(rm)
    assert _open(rm)[1] == "loaded"
    _touch(root_feat_dir(rm.config) / rel)
    _, status, log = _open(rm)
    assert status == "built" and "index is stale" in log and rel in log and "changed" in log
    assert _open(rm)[1] == "loaded"


def test_another_splits_list_leaves_the_index_current(own_run):
    from data.clotho import root_feat_dir
    from model.query import load_run_model

    rm = load_run_model(own_run)
    _open(rm)
    _touch(root_feat_dir(rm.config) / "val_list.txt")
    assert _open(rm)[1] == "loaded"


def test_config_hash_and_rebuild_flag(own_run):
    from model.query import load_run_model
    from model.run_index import build_run_index

    rm = load_run_model(own_run)
    loaded, _, _ = _open(rm)
    _, status, log = _open(dataclasses.replace(rm, config_hash="another config"))
    assert status == "built" and "model.config_hash changed" in log
    _open(rm)
    assert _open(rm)[1] == "loaded"
    rebuilt, status, _ = _open(rm, rebuild=True)
    assert status == "built"
    fresh, _ = build_run_index(rm, "test")
    assert rebuilt.clip_ids == fresh.clip_ids == loaded.clip_ids
    np.testing.assert_array_equal(rebuilt.emb, fresh.emb)
