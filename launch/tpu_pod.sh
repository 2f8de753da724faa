#!/usr/bin/env bash
# A Cloud TPU VM pod slice: create it (optional), install aah_jax on every worker, and run
# the same command on all of them.
#
#   launch/tpu_pod.sh create NAME ZONE ACCELERATOR [VERSION]   # e.g. v4-32 tpu-ubuntu2204-base
#   launch/tpu_pod.sh setup  NAME ZONE REPO_URL               # clone + pip install '.[tpu]' on all workers
#   launch/tpu_pod.sh run    NAME ZONE -- --config=configs/food101.py --workdir=gs://BUCKET/runs/food48
#
# On TPU VMs jax.distributed.initialize() finds the coordinator and the worker ids itself
# (AAH_DISTRIBUTED=1 turns it on). The workdir must be shared: a gs:// bucket (orbax and
# tfds read and write GCS) or a filesystem mounted on every worker. Datasets: prepare once
# with aah-prepare into a shared --config.data.data_dir.
set -euo pipefail
command=${1:?create, setup or run}
name=${2:?TPU name}
zone=${3:?zone}
shift 3
on_all() {
  gcloud compute tpus tpu-vm ssh "$name" --zone="$zone" --worker=all --command="$1"
}
case "$command" in
  create)
    accelerator=${1:?accelerator type, e.g. v4-32}
    version=${2:-tpu-ubuntu2204-base}
    gcloud compute tpus tpu-vm create "$name" --zone="$zone" \
      --accelerator-type="$accelerator" --version="$version"
    ;;
  setup)
    repo=${1:?repository URL}
    on_all "git clone $repo aah_jax || (cd aah_jax && git pull); cd aah_jax && python3.11 -m venv .venv && .venv/bin/pip install -q -e '.[tpu]'"
    ;;
  run)
    [[ "${1:-}" == "--" ]] && shift
    args=$(printf ' %q' "$@")
    on_all "cd aah_jax && AAH_DISTRIBUTED=1 .venv/bin/python -m aah_jax.main${args}"
    ;;
  *)
    echo "unknown command $command (create, setup or run)" >&2
    exit 2
    ;;
esac
