#!/usr/bin/env bash
# Submits launch/slurm.sbatch: a multi-node GPU job (one JAX process per node).
#
# Usage: launch/slurm.sh [--nodes N] [--gpus_per_node G] [--partition P] [--time T] [--dry_run] -- <gasp_jax.main args>
set -euo pipefail
# shellcheck source=launch/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

NODES=2
GPUS_PER_NODE=8
PARTITION=""
TIME=""
JOB_ARGS=()
while [ $# -gt 0 ]; do
  case "$1" in --*=*) set -- "${1%%=*}" "${1#*=}" "${@:2}" ;; esac  # --opt=value -> --opt value
  case "$1" in
    --nodes) NODES="$2"; shift 2 ;;
    --gpus_per_node) GPUS_PER_NODE="$2"; shift 2 ;;
    --partition) PARTITION="$2"; shift 2 ;;
    --time) TIME="$2"; shift 2 ;;
    --dry_run) DRY_RUN=1; shift ;;
    --) shift; JOB_ARGS=("$@"); break ;;
    -h|--help) sed -n '2,4p' "$0"; exit 0 ;;
    *) gasp_die "unknown argument '$1' (see --help)" ;;
  esac
done
[ "${#JOB_ARGS[@]}" -gt 0 ] || gasp_die "give the job's arguments after --"
gasp_need sbatch "SLURM is not installed here; run this on the cluster's login node"
gasp_plan --num_devices="$((NODES * GPUS_PER_NODE))" --device_memory_gb="${GPU_MEMORY_GB:-80}" -- "${JOB_ARGS[@]}"
SBATCH=(sbatch --nodes="$NODES" --gpus-per-node="$GPUS_PER_NODE" --chdir="$GASP_ROOT" "--export=ALL,GASP_ROOT=$GASP_ROOT")
[ -n "$PARTITION" ] && SBATCH+=(--partition="$PARTITION")
[ -n "$TIME" ] && SBATCH+=(--time="$TIME")
gasp_run "${SBATCH[@]}" "$GASP_ROOT/launch/slurm.sbatch" "${JOB_ARGS[@]}"
