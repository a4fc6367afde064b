"""Read the archive's small text files (split lists, caption CSVs) as UTF-8, with a one-line error otherwise.

A leading UTF-8 byte-order mark (as spreadsheet programs write it) is dropped: left in place it would become part of
the first clip id or of the first CSV column name.
"""
from __future__ import annotations

from pathlib import Path

from utils.errors import UserError


def read_utf8(path: Path, what: str = "file") -> str:
    """The text of ``path`` decoded as UTF-8 (BOM dropped); UserError naming the path, line and byte otherwise."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path}: is a folder, expected a {what}")
    if not path.is_file():
        raise UserError(f"{path}: {what} not found")
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise UserError(f"{path}: cannot be read ({err.strerror or err})") from None
    if b"\x00" in raw:
        at = raw.index(b"\x00")
        line = raw[:at].count(b"\n") + 1
        raise UserError(f"{path}: line {line}: not UTF-8 text (NUL byte at offset {at}: a binary or UTF-16 file?); "
                        "save the file as UTF-8")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw[:err.start].count(b"\n") + 1
        raise UserError(f"{path}: line {line}: not UTF-8 text (byte 0x{raw[err.start]:02x} at offset {err.start}); "
                        "save the file as UTF-8") from None
