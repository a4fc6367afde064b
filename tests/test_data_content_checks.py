"""Content checks (data/content_checks.py, printed by ``python -m data.clotho``): duplicate clips within and across
splits (leakage) and present-but-all-zero features are reported by clip id; clean data, look-alikes and missing
clips are not."""
from __future__ import annotations

import numpy as np
import pytest

from data.clotho import SplitData, main as clotho_main
from data.content_checks import all_zero_clips, content_warnings, duplicate_clips
from tests.archive_fixture import EXPERT_FILES, PROVENANCE, copy_fixture, cli_args, hickle4_dataset_name
from utils.errors import run_cli


def _split(name: str, n: int, seed: int) -> SplitData:
    rng = np.random.default_rng(seed)
    experts = {"audio": rng.standard_normal((n, 4, 3)).astype(np.float32),
               "vggsound": rng.standard_normal((n, 2, 5)).astype(np.float32)}
    ids = [f"{name}_{i}.wav" for i in range(n)]
    return SplitData(name, ids, [["a"] * 5 for _ in ids], experts, {e: np.ones(n, bool) for e in experts},
                     np.zeros((n, 5, 2, 3), np.float32), np.ones((n, 5), np.int64))


def _data() -> dict[str, SplitData]:
    return {"train": _split("train", 6, 0), "val": _split("val", 4, 1), "test": _split("test", 5, 2)}


def _copy_clip(data, dst: tuple[str, int], src: tuple[str, int]) -> None:
    for e in data[dst[0]].experts:
        data[dst[0]].experts[e][dst[1]] = data[src[0]].experts[e][src[1]]


def test_clean_data_has_no_warnings():
    assert content_warnings(_data()) == []


def test_a_test_clip_copied_from_train_is_reported_as_leakage():
    data = _data()
    _copy_clip(data, ("test", 3), ("train", 1))
    _copy_clip(data, ("test", 4), ("train", 5))
    assert duplicate_clips(data) == [("test", "test_3.wav", "train", "train_1.wav"),
                                     ("test", "test_4.wav", "train", "train_5.wav")]
    (line,) = content_warnings(data)
    assert line.startswith("2 test clips have the same features as a train clip in every expert "
                           "(test 'test_3.wav' = train 'train_1.wav', test 'test_4.wav' = train 'train_5.wav')")
    assert "leakage" in line


def test_duplicates_within_a_split_and_their_wording():
    data = _data()
    _copy_clip(data, ("val", 2), ("val", 0))
    (line,) = content_warnings(data)
    assert line.startswith("1 val clip has the same features as a val clip in every expert (val 'val_2.wav' = val "
                           "'val_0.wav')") and "two copies" in line


@pytest.mark.parametrize("change", ["one expert differs", "swapped values (same fingerprint)", "missing vs present"])
def test_look_alikes_are_not_duplicates(change):
    data = _data()
    _copy_clip(data, ("test", 0), ("train", 0))
    t = data["test"]
    if change == "one expert differs":
        t.experts["vggsound"][0, 1, 2] += 1.0
    elif change == "swapped values (same fingerprint)":  # the bit sums collide; the exact comparison tells them apart
        a = t.experts["audio"][0]
        a[0, 0], a[1, 1] = a[1, 1].copy(), a[0, 0].copy()
    else:
        t.experts["vggsound"][0] = np.nan
        t.ind["vggsound"][0] = False
    assert duplicate_clips(data) == []


def test_clips_missing_the_same_expert_with_equal_other_features_are_duplicates():
    data = _data()
    _copy_clip(data, ("test", 1), ("train", 2))
    for split, i in (("test", 1), ("train", 2)):
        data[split].experts["audio"][i] = np.nan
        data[split].ind["audio"][i] = False
    assert duplicate_clips(data) == [("test", "test_1.wav", "train", "train_2.wav")]


def test_all_zero_present_features_are_reported_but_missing_clips_are_not():
    data = _data()
    data["val"].experts["vggsound"][1] = 0.0
    data["val"].experts["vggsound"][3] = 0.0
    data["train"].experts["audio"][0] = np.nan  # missing (NaN marker): fine
    data["train"].ind["audio"][0] = False
    data["test"].experts["audio"][2, 0, 0] = 0.0  # one zero value: fine
    assert all_zero_clips(data) == [("val", "vggsound", ["val_1.wav", "val_3.wav"])]
    lines = content_warnings(data)
    assert any(ln.startswith("2 val clips have all-zero 'vggsound' features although marked present ('val_1.wav', "
                             "'val_3.wav')") for ln in lines), lines


def test_the_data_check_command_prints_the_warnings_by_clip_id(tmp_path, capsys):
    import h5py

    data_dir = copy_fixture(tmp_path / "d")
    assert run_cli(clotho_main, cli_args(data_dir)) == 0
    assert "content: no duplicate clips, no all-zero features" in capsys.readouterr().out
    expert = "vggsound"
    cid = next(c for c in PROVENANCE["splits"]["test"] if PROVENANCE["missing"].get(expert) != c)
    with h5py.File(data_dir / "structured-symlinks" / EXPERT_FILES[expert], "r+") as fh:
        ds = fh[hickle4_dataset_name(cid)]
        ds[...] = np.zeros(ds.shape, ds.dtype)
    assert run_cli(clotho_main, cli_args(data_dir)) == 0
    out = capsys.readouterr().out
    assert f"warning: 1 test clip has all-zero '{expert}' features although marked present ({cid!r})" in out


def test_present_all_zero_clips_are_duplicates_of_each_other_not_missing_clips():
    """A present all-zero clip is not a missing one (fingerprint +1): two failed extractions are one recording."""
    data = _data()
    for split, i in (("train", 4), ("test", 0)):
        for e in data[split].experts:
            data[split].experts[e][i] = 0.0
    assert duplicate_clips(data) == [("test", "test_0.wav", "train", "train_4.wav")]


@pytest.mark.parametrize("n, more", [(3, False), (4, True)])
def test_at_most_three_clips_are_shown_then_an_ellipsis(n, more):
    data = _data()
    for k in range(n):
        _copy_clip(data, ("test", k), ("train", k))
        data["val"].experts["audio"][k] = 0.0
    dup, zero = content_warnings(data)
    assert dup.startswith(f"{n} test clips have the same features as a train clip")
    assert ("test 'test_2.wav' = train 'train_2.wav', ...):" in dup) == more
    assert ("'test_3.wav'" in dup) is False
    assert zero.startswith(f"{n} val clips have all-zero 'audio' features although marked present ('val_0.wav', "
                           f"'val_1.wav', 'val_2.wav'{', ...' if more else ''}):")


def test_same_features_compares_shapes_and_dtypes_not_only_bytes():
    from data.content_checks import same_features

    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    z = np.zeros((2, 4), np.float32)
    assert same_features([("a", [x]), ("b", [x.reshape(4, 2)]), ("c", [z]), ("d", [z.view(np.int32)]),
                          ("e", [x.copy()])]) == [("e", "a")]
