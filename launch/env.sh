#!/usr/bin/env bash
# Creates (or reuses) the project virtualenv at .venv and installs gasp_jax into it.
# Usage: source launch/env.sh [extras]   (comma-separated setup.py extras, e.g. "tensorboard" for the
# main command's viewer, "test" for the test suite)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
EXTRAS="${1:-}"
PY="${PYTHON:-python3}"
VENV="${GASP_VENV:-$ROOT/.venv}"
if [ ! -x "$VENV/bin/python" ]; then
  echo "[env] creating $VENV"
  "$PY" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip
fi
SPEC="$ROOT"
[ -n "$EXTRAS" ] && SPEC="${ROOT}[${EXTRAS}]"
STAMP="$VENV/.gasp_jax_installed_${EXTRAS:-base}"
# Reinstall only when setup.py changed since the last install.
if [ ! -f "$STAMP" ] || [ "$ROOT/setup.py" -nt "$STAMP" ]; then
  echo "[env] installing gasp_jax${EXTRAS:+[$EXTRAS]} (first time takes a few minutes)"
  case ",$EXTRAS," in
    *,test,*)
      # The CPU torch wheel first, pinned, so nothing pulls the CUDA build.
      "$VENV/bin/python" -m pip install -q "torch==2.13.0" ;;
  esac
  "$VENV/bin/python" -m pip install -q -e "$SPEC"
  touch "$STAMP"
fi
export PATH="$VENV/bin:$PATH"
