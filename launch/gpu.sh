#!/usr/bin/env bash
# A gasp_jax job on one GPU node: one process drives every local GPU (the mesh spans them all).
# For several nodes use launch/slurm.sh (one process per node, jax.distributed from SLURM's environment).
#
# Usage: launch/gpu.sh [--gpus 0,1,2,3] [--dry_run] -- <gasp_jax.main args>
set -euo pipefail
# shellcheck source=launch/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

GPUS=""
JOB_ARGS=()
while [ $# -gt 0 ]; do
  case "$1" in --*=*) set -- "${1%%=*}" "${1#*=}" "${@:2}" ;; esac  # --opt=value -> --opt value
  case "$1" in
    --gpus) GPUS="$2"; shift 2 ;;
    --dry_run) DRY_RUN=1; shift ;;
    --) shift; JOB_ARGS=("$@"); break ;;
    -h|--help) sed -n '2,5p' "$0"; exit 0 ;;
    *) gasp_die "unknown argument '$1' (see --help)" ;;
  esac
done
[ "${#JOB_ARGS[@]}" -gt 0 ] || gasp_die "give the job's arguments after --"
gasp_need nvidia-smi "no NVIDIA driver on this machine (install jax[cuda12] on a GPU node)"
if [ -z "$GPUS" ]; then
  COUNT=8
  [ "$DRY_RUN" != "1" ] && COUNT="$(nvidia-smi --list-gpus | wc -l)"
else
  COUNT="$(echo "$GPUS" | tr ',' '\n' | wc -l)"
fi
gasp_plan --num_devices="$COUNT" --device_memory_gb="${GPU_MEMORY_GB:-80}" -- "${JOB_ARGS[@]}"
ENV=(env XLA_PYTHON_CLIENT_MEM_FRACTION="${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.9}")
[ -n "$GPUS" ] && ENV+=(CUDA_VISIBLE_DEVICES="$GPUS")
PY="python"
[ -x "$GASP_ROOT/.venv/bin/python" ] && PY="$GASP_ROOT/.venv/bin/python"
cd "$GASP_ROOT"
gasp_run "${ENV[@]}" "$PY" -m gasp_jax.main "${JOB_ARGS[@]}"
