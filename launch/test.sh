#!/usr/bin/env bash
# The test suite: sets up .venv with the test extra and runs pytest (slow tests excluded by default).
# Extra arguments go to pytest, e.g.  bash launch/test.sh tests/test_models.py   or   bash launch/test.sh -m slow
# (everything: bash launch/test.sh -m "")
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# tpu: libtpu, so the ahead-of-time TPU compile tests (tests/test_plan_aot.py) run on this CPU machine.
source "$ROOT/launch/env.sh" test,tpu
cd "$ROOT"
# Slow tests are deselected unless the arguments choose markers themselves (-m ...).
MARKERS=(-m "not slow")
for arg in "$@"; do [ "$arg" = "-m" ] && MARKERS=(); done
exec python -m pytest -q "${MARKERS[@]}" "$@"
