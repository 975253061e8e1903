#!/usr/bin/env bash
# A gasp_jax job on this machine: CPU or its one accelerator. With --processes N it runs N cooperating
# JAX processes (jax.distributed on localhost), each with --devices_per_process faked CPU devices: a
# rehearsal of a multi-host run on one machine.
#
# Usage: launch/local.sh [--processes N] [--devices_per_process D] [--dry_run] -- <gasp_jax.main args>
set -euo pipefail
# shellcheck source=launch/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

PROCESSES=1
DEVICES=""
JOB_ARGS=()
while [ $# -gt 0 ]; do
  case "$1" in --*=*) set -- "${1%%=*}" "${1#*=}" "${@:2}" ;; esac  # --opt=value -> --opt value
  case "$1" in
    --processes) PROCESSES="$2"; shift 2 ;;
    --devices_per_process) DEVICES="$2"; shift 2 ;;
    --dry_run) DRY_RUN=1; shift ;;
    --) shift; JOB_ARGS=("$@"); break ;;
    -h|--help) sed -n '2,6p' "$0"; exit 0 ;;
    *) gasp_die "unknown argument '$1' (see --help)" ;;
  esac
done
[ "${#JOB_ARGS[@]}" -gt 0 ] || gasp_die "give the job's arguments after --"
PY="python3"
[ -x "$GASP_ROOT/.venv/bin/python" ] && PY="$GASP_ROOT/.venv/bin/python"
cd "$GASP_ROOT"
if [ "$PROCESSES" = "1" ]; then
  ENV=(env)
  [ -n "$DEVICES" ] && ENV+=(JAX_PLATFORMS=cpu XLA_FLAGS="--xla_force_host_platform_device_count=$DEVICES")
  gasp_run "${ENV[@]}" "$PY" -m gasp_jax.main "${JOB_ARGS[@]}"
else
  gasp_run "$PY" -m gasp_jax.multihost --processes="$PROCESSES" --devices_per_process="${DEVICES:-1}" -- \
    "$PY" -m gasp_jax.main "${JOB_ARGS[@]}"
fi
