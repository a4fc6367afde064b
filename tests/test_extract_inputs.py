"""Input checks of ``python -m data.extract`` that a silently wrong archive would otherwise hide (docs/EXTRACT.md)."""
from __future__ import annotations

import pytest

from data.text_features import read_caption_csv
from utils.errors import UserError

HEADER = "file_name,caption_1,caption_2,caption_3,caption_4,caption_5\n"
GOOD = "cat.wav,a cat meows,the cat,cat sound,an animal cat,a cat is heard\n"


# ---------------------------------------------------------------------------------------------------------------
# caption CSV: every record has as many fields as the header; quotes parsed strictly; clip ids fit a split list
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("row, expect", [
    # an unquoted comma in a caption: 7 fields, the last caption would be dropped silently
    ("dog.wav,a dog barks, then growls,the dog is barking,a barking dog,dog noise outside,a dog is heard\n",
     r"line 3: 7 fields, expected 6 as in the header \(a caption containing a comma must be in double quotes\)"),
    ("dog.wav,a,b,c,d,e,f,g,h\n", "line 3: 9 fields, expected 6"),
    ("dog.wav,a dog barks,two,three,four\n", "line 3: 5 fields, expected 6"),
    ("dog.wav\n", "line 3: 1 field, expected 6"),
    ('"dog.wav,a,b,c,d,e\n', "line 3: a double quote opened in this record is never closed"),
    ('dog.wav,"a,b,c,d,e\n', "line 3: a double quote opened in this record is never closed"),
    ('dog.wav,"a" dog,b,c,d,e\n', "line 3: text after a closing double quote"),
    ('"dog\nx.wav",a,b,c,d,e\n', r"lines 3-4: file_name 'dog\\nx.wav' contains a line break"),
    ('"dog\rx.wav",a,b,c,d,e\n', r"file_name 'dog\\rx.wav' contains a line break"),
    ('"dog\u2028x.wav",a,b,c,d,e\n', r"file_name 'dog\\u2028x.wav' contains a line break"),
    ('dog.wav,"a dog\nbarks",b,c,d\n', r"lines 3-4: 5 fields, expected 6 as in the header \(the record spans several lines"),
])
def test_csv_records_are_checked(tmp_path, row, expect):
    path = tmp_path / "captions.csv"
    path.write_text(HEADER + GOOD + row + GOOD.replace("cat", "cow"), newline="")
    with pytest.raises(UserError, match=expect) as info:
        read_caption_csv(path)
    assert str(path) in str(info.value)


def test_csv_quoted_commas_and_line_breaks_in_captions_are_fine(tmp_path):
    path = tmp_path / "captions.csv"
    path.write_text(HEADER + 'dog.wav,"a dog barks, then growls","two\nlines",c,d,e\n' + GOOD, newline="")
    rows = read_caption_csv(path)
    assert rows["dog.wav"] == ["a dog barks, then growls", "two\nlines", "c", "d", "e"] and len(rows) == 2


def test_csv_duplicate_column_is_refused(tmp_path):
    path = tmp_path / "captions.csv"
    path.write_text(HEADER.strip() + ",caption_2\n" + GOOD.strip() + ",x\n")
    with pytest.raises(UserError, match="line 1: column caption_2 appears 2 times"):
        read_caption_csv(path)


# ---------------------------------------------------------------------------------------------------------------
# compute_features with fake experts (no model): non-finite outputs are bad audio; the cache key holds the options
# ---------------------------------------------------------------------------------------------------------------
import numpy as np  # noqa: E402
import soundfile as sf  # noqa: E402

from data.audio import BadAudio  # noqa: E402
from data.experts.registry import ExpertInfo  # noqa: E402

RATE = 16000


class FakeExpert:
    """An expert with no model: the front end is the waveform in 0.5 s rows, embed their means (D = 2)."""

    sample_rate = RATE
    min_samples = RATE

    def __init__(self, name="fake", poison=None, where="embed"):
        self.info = ExpertInfo(name, "none", name, f"aggregated_{name}/{name}-raw.hickle", 2, "test")
        self.poison, self.where, self.calls = poison, where, 0

    name = property(lambda self: self.info.name)
    dim = property(lambda self: self.info.dim)

    def fingerprint(self):
        return f"{self.name}-v1"

    def frontend(self, samples):
        x = np.asarray(samples, np.float32)[: len(samples) // 8000 * 8000].reshape(-1, 8000).copy()
        if self.where == "frontend" and self.poison is not None and abs(float(x[0, 0]) - self.poison) < 1e-6:
            x[0, 0] = np.nan
        return x

    def embed(self, inputs):
        self.calls += len(inputs)
        out = []
        for x in inputs:
            feat = np.stack([x.mean(axis=1), x.std(axis=1)], axis=1)
            if self.where in ("embed", "empty") and self.poison is not None and abs(float(x[0, 0]) - self.poison) < 1e-6:
                feat = feat[:0] if self.where == "empty" else feat * np.inf
            out.append(feat)
        return out


def _clip(path, seconds=2.0, seed=0, level=0.1, first=None):
    x = (level * np.random.default_rng(seed).standard_normal(int(seconds * RATE))).astype(np.float32)
    if first is not None:
        x[0] = first
    sf.write(path, x, RATE, subtype="FLOAT")
    return path


@pytest.mark.parametrize("where", ["embed", "empty", "frontend"])
def test_non_finite_expert_or_frontend_output_is_bad_audio(tmp_path, where):
    """Before: an invalid expert output aborted the whole run even with skip_bad (search.py --audio too)."""
    from data.audio_features import compute_features

    for i, name in enumerate(["a.wav", "b.wav", "c.wav"]):
        _clip(tmp_path / name, seed=i, first=0.25 if name == "b.wav" else 0.0)
    expert = FakeExpert(poison=0.25, where=where)
    results, bad, _ = compute_features(tmp_path, ["a.wav", "b.wav", "c.wav"], [expert], tmp_path / "cache",
                                       skip_bad=True, progress=False)
    assert [r.rel for r in results] == ["a.wav", "c.wav"]
    assert [rel for rel, _ in bad] == ["b.wav"] and "b.wav" in bad[0][1]
    assert ("front end" if where == "frontend" else "expert fake") in bad[0][1]
    with pytest.raises(BadAudio, match="b.wav: .*(non-finite|empty)"):
        compute_features(tmp_path, ["a.wav", "b.wav"], [FakeExpert(poison=0.25, where=where)], None, progress=False)


@pytest.mark.parametrize("first, second, expect", [
    # a short clip padded under --pad-short must not pass a later run without it
    (dict(pad_short=True), dict(pad_short=False), "shorter than one fake patch"),
    # a quiet clip accepted at --silence-dbfs -100 must not pass at the default -80
    (dict(silence_dbfs=-100.0), dict(), "silent"),
    # a long clip accepted at --max-seconds 10 must not pass at 3
    (dict(max_seconds=10.0), dict(max_seconds=3.0), "over the 3 s limit"),
])
def test_cache_entries_are_keyed_on_the_options(tmp_path, first, second, expect):
    from data.audio_features import compute_features

    _clip(tmp_path / "ok.wav", seconds=2.0)
    if "pad_short" in first:
        _clip(tmp_path / "x.wav", seconds=0.6, seed=1)
    elif "silence_dbfs" in first:
        _clip(tmp_path / "x.wav", seconds=2.0, seed=1, level=10 ** (-90 / 20) / 4)  # peak about -85 dBFS
    else:
        _clip(tmp_path / "x.wav", seconds=5.0, seed=1)
    cache = tmp_path / "cache"
    expert = FakeExpert()
    results, bad, _ = compute_features(tmp_path, ["ok.wav", "x.wav"], [expert], cache, progress=False, **first)
    assert len(results) == 2 and not bad and expert.calls == 2
    again = FakeExpert()
    compute_features(tmp_path, ["ok.wav", "x.wav"], [again], cache, progress=False, **first)
    assert again.calls == 0  # same options: all from the cache
    with pytest.raises(BadAudio, match=f"x.wav: .*{expect}"):
        compute_features(tmp_path, ["ok.wav", "x.wav"], [FakeExpert()], cache, progress=False, **second)
    results, bad, _ = compute_features(tmp_path, ["ok.wav", "x.wav"], [FakeExpert()], cache, progress=False,
                                       skip_bad=True, **second)
    assert [r.rel for r in results] == ["ok.wav"] and expect.split()[0] in bad[0][1]
