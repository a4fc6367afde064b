"""Caption CSV -> raw-captions.pkl + text_embeddings/minilm.pkl with the offline MiniLM."""
import csv
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest

from data.clotho import load_clotho
from data.text_features import (main, read_caption_csv, sentence_embeddings, token_embeddings,
                                tokenize)
from utils.errors import UserError

ROOT = Path(__file__).resolve().parents[1]


def _csv(path, rows, header=("file_name", "caption_1", "caption_2", "caption_3", "caption_4", "caption_5")):
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)
    return path


def test_tokenize():
    assert tokenize("A dog barks, while it's raining!") == ["a", "dog", "barks", "while", "it's", "raining"]


def test_csv_errors(tmp_path):
    with pytest.raises(UserError, match="missing columns caption_5"):
        read_caption_csv(_csv(tmp_path / "a.csv", [], header=("file_name", "caption_1", "caption_2", "caption_3", "caption_4")))
    with pytest.raises(UserError, match=r"line 3: clip 'x.wav' appears twice"):
        read_caption_csv(_csv(tmp_path / "b.csv", [["x.wav", *"abcde"], ["x.wav", *"abcde"]]))
    with pytest.raises(UserError, match=r"line 2: clip 'x.wav' caption_3 has no words"):
        read_caption_csv(_csv(tmp_path / "c.csv", [["x.wav", "a", "b", "...", "d", "e"]]))
    with pytest.raises(UserError, match="file not found"):
        read_caption_csv(tmp_path / "none.csv")
    with pytest.raises(UserError, match=r"d.csv: line 3: empty file_name$"):
        read_caption_csv(_csv(tmp_path / "d.csv", [["x.wav", *"abcde"], ["  ", *"abcde"]]))
    with pytest.raises(UserError, match=r"e.csv: no rows$"):  # a header alone would build an archive of nothing
        read_caption_csv(_csv(tmp_path / "e.csv", []))


def test_merging_into_an_existing_file_that_is_not_a_dict_is_refused(tmp_path):
    from data.text_features import _merge_pickle

    path = tmp_path / "raw-captions.pkl"
    path.write_bytes(pickle.dumps([["a", "dog"]]))
    with pytest.raises(UserError, match=r"raw-captions.pkl: existing file is not a pickled dict$"):
        _merge_pickle(path, {"x.wav": [["a"]] * 5})
    assert pickle.loads(path.read_bytes()) == [["a", "dog"]]  # left as it was


def test_embeddings_shapes():
    sent = sentence_embeddings(["a dog barks", "rain falls on a roof", "wind"], progress=False)
    assert sent.shape == (3, 384) and sent.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(sent, axis=1), 1.0, atol=1e-5)
    tok = token_embeddings(["a dog barks", "wind"], progress=False)
    assert tok[0].shape == (4, 384) and tok[1].shape == (1, 384)  # a dog bark ##s / wind, no [CLS] [SEP]
    assert sentence_embeddings([], progress=False).shape == (0, 384)


def test_csv_to_archive_and_load(tmp_path, tiny_data_dir, tiny_config):
    data_dir = tmp_path / "set"
    shutil.copytree(tiny_data_dir, data_dir)
    root = data_dir / "structured-symlinks"
    ids = (root / "test_list.txt").read_text().split()
    rows = [[cid] + [f"A dog number {i} barks, take {k}." for k in range(5)] for i, cid in enumerate(ids)]
    csv_path = _csv(tmp_path / "caps.csv", rows)
    main(["--csv", str(csv_path), "--out", str(root), "--split-list", "test", "--no-progress"])  # in-process: one model load
    caps = pickle.load(open(root / "structured-symlinks" / "raw-captions.pkl", "rb"))
    assert caps[ids[0]][0] == ["a", "dog", "number", "0", "barks", "take", "0"]
    assert len(caps) == 128  # merged with the synthetic captions
    minilm = pickle.load(open(root / "text_embeddings" / "minilm.pkl", "rb"))
    assert set(minilm) == set(ids) and all(len(v) == 5 and v[0].shape[1] == 384 for v in minilm.values())
    assert (root / "test_list.txt").read_text().split() == ids

    cfg = tiny_config
    cfg["data_loader"]["args"]["data_dir"] = str(data_dir)
    cfg["experts"]["text_feat"] = "minilm"
    test = load_clotho(cfg, ["test"])["test"]
    assert test.text.shape == (32, 5, 21, 384)
    assert test.captions[1][2] == "a dog number 1 barks take 2"
