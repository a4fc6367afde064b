"""Fuse the caption queries of each clip of a run (or a bare matrix) and evaluate: ``python fusion.py --help``."""
from __future__ import annotations

import sys
from typing import Sequence

from utils.errors import run_cli


def main(argv: Sequence[str] | None = None) -> dict:
    from fusion.run import build_parser, main_from_args  # the package fusion/ wins over this script's name
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # the command recorded in the reports
    return main_from_args(args)


if __name__ == "__main__":
    sys.exit(run_cli(main))
