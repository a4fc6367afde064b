"""Fuse the caption queries of each clip of a run (or a bare matrix) and evaluate: ``python fusion.py --help``."""
from __future__ import annotations

import sys
from typing import Sequence

from utils.errors import run_cli


def main(argv: Sequence[str] | None = None) -> dict:
    from fusion.run import build_parser, main_from_args  # the package fusion/ wins over this script's name
    return main_from_args(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(run_cli(main))
