#!/usr/bin/env bash
# A gasp_jax job on a Cloud TPU VM slice (single host such as v4-8, or multi-host such as v5p-64):
# create or reuse the slice, copy this checkout to every worker, install, run the same command on all
# workers (one JAX process per host; jax.distributed starts from GASP_DISTRIBUTED=1), stream the logs,
# and optionally delete the slice.
#
# Usage: launch/tpu_vm.sh [options] [steps] -- <gasp_jax.main args>
#   steps (default: create sync install run): create sync install run logs stop delete
#   --name NAME            slice name (default: $USER-gasp)
#   --project PROJECT      GCP project (default: gcloud's configured project)
#   --zone ZONE            (default: us-central2-b)
#   --accelerator TYPE     v4-8, v5p-64, v5litepod-16, v6e-32, ... (default: v4-8)
#   --runtime_version V    TPU VM image (default: tpu-ubuntu2204-base)
#   --spot                 create a spot slice
#   --remote_dir DIR       checkout location on the workers (default: gasp_jax, under $HOME)
#   --jax_extra EXTRA      pip extra for JAX on TPU (default: "jax[tpu]")
#   --log_worker N         worker whose log `logs` streams (default: 0)
#   --dry_run              print every command, run nothing (also DRY_RUN=1)
# Example:
#   launch/tpu_vm.sh --name me-v5p --accelerator v5p-64 --zone us-east5-a -- \
#       --config=configs/azr.py:paper --workdir=gs://my-bucket/runs/azr_7b --config.model.hf_path=/mnt/ckpt/Qwen2.5-Coder-7B
set -euo pipefail
# shellcheck source=launch/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

NAME="${USER:-gasp}-gasp"
PROJECT=""
ZONE="us-central2-b"
ACCELERATOR="v4-8"
RUNTIME_VERSION="tpu-ubuntu2204-base"
SPOT=0
REMOTE_DIR="gasp_jax"
JAX_EXTRA="jax[tpu]"
LOG_WORKER=0
STEPS=()
JOB_ARGS=()
while [ $# -gt 0 ]; do
  case "$1" in --*=*) set -- "${1%%=*}" "${1#*=}" "${@:2}" ;; esac  # --opt=value -> --opt value
  case "$1" in
    --name) NAME="$2"; shift 2 ;;
    --project) PROJECT="$2"; shift 2 ;;
    --zone) ZONE="$2"; shift 2 ;;
    --accelerator) ACCELERATOR="$2"; shift 2 ;;
    --runtime_version) RUNTIME_VERSION="$2"; shift 2 ;;
    --spot) SPOT=1; shift ;;
    --remote_dir) REMOTE_DIR="$2"; shift 2 ;;
    --jax_extra) JAX_EXTRA="$2"; shift 2 ;;
    --log_worker) LOG_WORKER="$2"; shift 2 ;;
    --dry_run) DRY_RUN=1; shift ;;
    --) shift; JOB_ARGS=("$@"); break ;;
    create|sync|install|run|logs|stop|delete) STEPS+=("$1"); shift ;;
    -h|--help) sed -n '2,24p' "$0"; exit 0 ;;
    *) gasp_die "unknown argument '$1' (see --help)" ;;
  esac
done
[ "${#STEPS[@]}" -eq 0 ] && STEPS=(create sync install run)

gasp_need gcloud "install the Google Cloud SDK (https://cloud.google.com/sdk/docs/install) and run 'gcloud auth login'"
TPU=(gcloud compute tpus tpu-vm)
WHERE=(--zone="$ZONE")
[ -n "$PROJECT" ] && WHERE+=(--project="$PROJECT")
LOG="\$HOME/gasp_jax_run.log"

has_step() {
  local s
  for s in "${STEPS[@]}"; do [ "$s" = "$1" ] && return 0; done
  return 1
}

on_workers() {  # on_workers <worker|all> <remote shell command>
  gasp_run "${TPU[@]}" ssh "$NAME" "${WHERE[@]}" --worker="$1" --command="$2"
}

if has_step run; then
  [ "${#JOB_ARGS[@]}" -gt 0 ] || gasp_die "the run step needs the job's arguments after --"
  gasp_plan --accelerator="$ACCELERATOR" -- "${JOB_ARGS[@]}"
fi

if has_step create; then
  if [ "$DRY_RUN" != "1" ] && "${TPU[@]}" describe "$NAME" "${WHERE[@]}" >/dev/null 2>&1; then
    echo "# reusing the existing slice $NAME"
  else
    gasp_show "${TPU[@]}" describe "$NAME" "${WHERE[@]}"
    CREATE=("${TPU[@]}" create "$NAME" "${WHERE[@]}" --accelerator-type="$ACCELERATOR" --version="$RUNTIME_VERSION")
    [ "$SPOT" = "1" ] && CREATE+=(--spot)
    gasp_run "${CREATE[@]}"
  fi
fi

if has_step sync; then
  TARBALL="${TMPDIR:-/tmp}/gasp_jax_code_$NAME.tgz"
  gasp_run tar -C "$GASP_ROOT" --exclude=.git --exclude=.venv --exclude=runs --exclude='*.egg-info' \
    --exclude=__pycache__ -czf "$TARBALL" .
  gasp_run "${TPU[@]}" scp "$TARBALL" "$NAME:gasp_jax_code.tgz" "${WHERE[@]}" --worker=all
  on_workers all "mkdir -p $REMOTE_DIR && tar -xzf gasp_jax_code.tgz -C $REMOTE_DIR"
fi

if has_step install; then
  on_workers all "cd $REMOTE_DIR && python3 -m venv .venv && .venv/bin/pip install -q --upgrade pip && .venv/bin/pip install -q -e . $(gasp_quote "$JAX_EXTRA")"
fi

if has_step run; then
  # The same command on every worker; each writes its log and the caller sees all workers' output.
  on_workers all "set -o pipefail; cd $REMOTE_DIR && GASP_DISTRIBUTED=1 .venv/bin/python -m gasp_jax.main $(gasp_quote "${JOB_ARGS[@]}") 2>&1 | tee $LOG"
fi

if has_step logs; then
  on_workers "$LOG_WORKER" "tail -n 200 -F $LOG"
fi

if has_step stop; then
  on_workers all "pkill -INT -f 'gasp_jax.main' || true"
fi

if has_step delete; then
  gasp_run "${TPU[@]}" delete "$NAME" "${WHERE[@]}" --quiet
fi
