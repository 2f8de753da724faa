#!/usr/bin/env bash
# N processes on this machine, talking over localhost (gloo collectives on CPU): the
# multi-host code path without a cluster.
#
#   launch/local_multiprocess.sh NUM_PROCESSES DEVICES_PER_PROCESS WORKDIR [--config... flags]
#   e.g. launch/local_multiprocess.sh 2 4 runs/two --config=configs/tiny.py
#
# Every process runs the same command; process 0 writes the logs, results and report,
# all of them write their part of each checkpoint. Exits with the first failure's code.
set -euo pipefail
num_processes=${1:?number of processes}
devices=${2:?devices per process}
workdir=${3:?workdir}
shift 3
port=${AAH_PORT:-$((20000 + RANDOM % 20000))}
python=${PYTHON:-python}
pids=()
for ((i = 0; i < num_processes; i++)); do
  XLA_FLAGS="--xla_force_host_platform_device_count=${devices}" JAX_PLATFORMS=cpu \
    "$python" -m aah_jax.main --workdir="$workdir" --distributed \
    --coordinator_address="127.0.0.1:${port}" --num_processes="$num_processes" \
    --process_id="$i" "$@" &
  pids+=($!)
done
status=0
for pid in "${pids[@]}"; do
  wait "$pid" || status=$?
done
exit "$status"
