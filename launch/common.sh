#!/usr/bin/env bash
# Helpers sourced by the launch/ scripts: print-then-run, dry runs, tool checks, quoting.
# DRY_RUN=1 prints every command (shell-quoted, copy-pasteable) instead of running it.

GASP_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DRY_RUN="${DRY_RUN:-0}"

# Prints a command as one shell-quoted line.
gasp_show() {
  local out="+" arg
  for arg in "$@"; do out+=" $(printf '%q' "$arg")"; done
  echo "$out"
}

# Runs a command after printing it; only prints it under DRY_RUN=1.
gasp_run() {
  gasp_show "$@"
  if [ "$DRY_RUN" != "1" ]; then
    "$@"
  fi
}

# The arguments as one shell-quoted string (for commands run remotely through ssh).
gasp_quote() {
  local out="" arg
  for arg in "$@"; do out+="${out:+ }$(printf '%q' "$arg")"; done
  printf '%s' "$out"
}

# Fails with a clear message before anything is created when a required tool is missing.
gasp_need() {
  local tool="$1" hint="$2"
  if ! command -v "$tool" >/dev/null 2>&1; then
    if [ "$DRY_RUN" = "1" ]; then
      echo "# note: '$tool' is not installed here; a real run would stop now ($hint)" >&2
      return 0
    fi
    echo "error: '$tool' not found on PATH: $hint. Nothing was launched." >&2
    exit 2
  fi
}

gasp_die() {
  echo "error: $*" >&2
  exit 2
}

# The expected memory per device (gasp_jax/plan.py) before anything is launched; stops when it does not fit.
# Usage: gasp_plan <plan flags...> -- <gasp_jax.main args...> (only --config* args are used).
gasp_plan() {
  local plan_args=() main_args=() arg seen=0
  for arg in "$@"; do
    if [ "$seen" = 0 ] && [ "$arg" = "--" ]; then seen=1; continue; fi
    if [ "$seen" = 0 ]; then plan_args+=("$arg"); else main_args+=("$arg"); fi
  done
  local config_args=()
  for arg in "${main_args[@]}"; do
    case "$arg" in --config=*|--config.*) config_args+=("$arg") ;; esac
  done
  if [ "${#config_args[@]}" -eq 0 ]; then
    echo "# plan: skipped (no --config in the job arguments)"
    return 0
  fi
  local py="${GASP_PLAN_PYTHON:-python3}"
  [ -x "$GASP_ROOT/.venv/bin/python" ] && py="$GASP_ROOT/.venv/bin/python"
  # TPU targets: XLA compiles every program of one iteration for the topology when libtpu is installed
  # (pip install -e .[tpu]; minutes for a 7B preset); GASP_PLAN_COMPILE=0 keeps the hand estimate only.
  case " ${plan_args[*]} " in
    *" --accelerator="*)
      if [ "${GASP_PLAN_COMPILE:-1}" = "1" ] && "$py" -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('libtpu') is None)" 2>/dev/null; then
        plan_args+=(--compile)
      fi ;;
  esac
  gasp_show "$py" -m gasp_jax.plan "${plan_args[@]}" "${config_args[@]}"
  if [ "${GASP_SKIP_PLAN:-0}" = "1" ]; then
    echo "# plan: skipped (GASP_SKIP_PLAN=1)"
    return 0
  fi
  if ! (cd "$GASP_ROOT" && JAX_PLATFORMS=cpu "$py" -m gasp_jax.plan "${plan_args[@]}" "${config_args[@]}"); then
    gasp_die "the memory plan says this job does not fit (or the config is invalid); nothing was launched. Set GASP_SKIP_PLAN=1 to launch anyway."
  fi
}
