#!/usr/bin/env bash
# A gasp_jax job as a GKE workload with xpk (the launcher MaxText uses): one pod per TPU host, one or
# more slices (multi-slice: set mesh.dcn in the config, e.g. --config.mesh.dcn.data=2 with --num_slices 2).
# The image must contain this checkout installed with jax[tpu] (see docs/launch.md for a Dockerfile).
#
# Usage: launch/xpk.sh [options] [create|delete|list] -- <gasp_jax.main args>   (default step: create)
#   --cluster NAME         GKE cluster made with `xpk cluster create` (required)
#   --workload NAME        workload name (default: $USER-gasp-<timestamp>)
#   --tpu_type TYPE        v5p-256, v4-8, ... (default: v5p-8)
#   --num_slices N         (default: 1)
#   --docker_image IMAGE   image with gasp_jax installed (required for create)
#   --project PROJECT --zone ZONE
#   --dry_run              print every command, run nothing (also DRY_RUN=1)
set -euo pipefail
# shellcheck source=launch/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

CLUSTER=""
WORKLOAD="${USER:-gasp}-gasp-$(date +%m%d-%H%M%S)"
TPU_TYPE="v5p-8"
NUM_SLICES=1
IMAGE=""
PROJECT=""
ZONE=""
STEP="create"
JOB_ARGS=()
while [ $# -gt 0 ]; do
  case "$1" in --*=*) set -- "${1%%=*}" "${1#*=}" "${@:2}" ;; esac  # --opt=value -> --opt value
  case "$1" in
    --cluster) CLUSTER="$2"; shift 2 ;;
    --workload) WORKLOAD="$2"; shift 2 ;;
    --tpu_type) TPU_TYPE="$2"; shift 2 ;;
    --num_slices) NUM_SLICES="$2"; shift 2 ;;
    --docker_image) IMAGE="$2"; shift 2 ;;
    --project) PROJECT="$2"; shift 2 ;;
    --zone) ZONE="$2"; shift 2 ;;
    --dry_run) DRY_RUN=1; shift ;;
    --) shift; JOB_ARGS=("$@"); break ;;
    create|delete|list) STEP="$1"; shift ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) gasp_die "unknown argument '$1' (see --help)" ;;
  esac
done
[ -n "$CLUSTER" ] || gasp_die "--cluster is required"
gasp_need xpk "install it with 'pip install xpk' (https://github.com/AI-Hypercomputer/xpk) and create a cluster with 'xpk cluster create'"
WHERE=()
[ -n "$PROJECT" ] && WHERE+=(--project="$PROJECT")
[ -n "$ZONE" ] && WHERE+=(--zone="$ZONE")

case "$STEP" in
  create)
    [ -n "$IMAGE" ] || gasp_die "--docker_image is required to create a workload"
    [ "${#JOB_ARGS[@]}" -gt 0 ] || gasp_die "give the job's arguments after --"
    gasp_plan --accelerator="$TPU_TYPE" --num_slices="$NUM_SLICES" -- "${JOB_ARGS[@]}"
    gasp_run xpk workload create --cluster="$CLUSTER" --workload="$WORKLOAD" --tpu-type="$TPU_TYPE" \
      --num-slices="$NUM_SLICES" --docker-image="$IMAGE" "${WHERE[@]}" \
      --command="GASP_DISTRIBUTED=1 python -m gasp_jax.main $(gasp_quote "${JOB_ARGS[@]}")"
    echo "# logs: kubectl logs -f -l jobset.sigs.k8s.io/jobset-name=$WORKLOAD --max-log-requests=1000"
    ;;
  delete) gasp_run xpk workload delete --cluster="$CLUSTER" --workload="$WORKLOAD" "${WHERE[@]}" ;;
  list) gasp_run xpk workload list --cluster="$CLUSTER" "${WHERE[@]}" ;;
esac
