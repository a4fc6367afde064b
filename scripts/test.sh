#!/usr/bin/env bash
# Set up the venv with the test requirements and run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh requirements/requirements-test.txt
exec .venv/bin/python -m pytest -q "$@"
