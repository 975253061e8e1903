#!/usr/bin/env bash
# The main job on the embedded CPU default: sets up .venv, runs configs/tiny_cpu.py.
# Extra arguments are passed on, e.g.  bash launch/tiny_cpu.sh --config.seed=1
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/launch/env.sh"
cd "$ROOT"
WORKDIR="${WORKDIR:-$ROOT/runs/tiny_cpu}"
exec python -m gasp_jax.main --config="$ROOT/configs/tiny_cpu.py" --workdir="$WORKDIR" "$@"
