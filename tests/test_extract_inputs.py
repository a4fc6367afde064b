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
