#!/usr/bin/env bash
# The main job on the embedded CPU default: sets up .venv, runs GASP's tiny preset (configs/gasp.py:tiny):
# a warm-started tiny model (trained once and cached on first use) plays teacher and student against five
# real LiveCodeBench goalposts. A few minutes on 2 cores; TensorBoard in $WORKDIR/tb (docs/gasp.md).
# Extra arguments are passed on, e.g.  bash launch/tiny_cpu.sh --config.seed=1
# (no user/PID namespaces on this machine: add --config.sandbox.allow_unsafe=True, see docs/sandbox.md).
# The previous toy RL job: python -m gasp_jax.main --config=configs/tiny_cpu.py --workdir=runs/toy_rl
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/launch/env.sh" tensorboard  # + the viewer, so `tensorboard --logdir runs/` works (an explicit argument: a bare `source` would hand env.sh this script's arguments)
cd "$ROOT"
WORKDIR="${WORKDIR:-$ROOT/runs/tiny_cpu}"
# A CPU job: keep JAX off libtpu even when the test set-up installed it into the same venv.
export JAX_PLATFORMS="${JAX_PLATFORMS:-cpu}"
exec python -m gasp_jax.main --config="$ROOT/configs/gasp.py:tiny" --workdir="$WORKDIR" "$@"
