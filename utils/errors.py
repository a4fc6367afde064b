"""User-facing errors and the CLI wrapper that turns them into one line + exit code 2.

Every command of the toolkit runs through :func:`run_cli`: a :class:`UserError` (bad input,
bad usage) prints ``error: <message>`` on stderr and exits 2 with no traceback; anything else
is a bug and exits 1 with its traceback.
"""
from __future__ import annotations

import sys
from typing import Callable, Sequence


class UserError(Exception):
    """Bad input or usage. The message names the file / key / clip id at fault."""


def run_cli(main: Callable[[Sequence[str] | None], object], argv: Sequence[str] | None = None) -> int:
    """Run ``main(argv)`` and map its outcome to the contract's exit codes (0 / 1 / 2)."""
    try:
        main(argv)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0
