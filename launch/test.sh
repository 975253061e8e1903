#!/usr/bin/env bash
# The test suite: sets up .venv with the test extra and runs pytest (slow tests excluded by default).
# Extra arguments go to pytest, e.g.  bash launch/test.sh -m slow   or   bash launch/test.sh tests/test_models.py
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/launch/env.sh" test
cd "$ROOT"
if [ "$#" -eq 0 ]; then set -- -m "not slow"; fi
exec python -m pytest -q "$@"
