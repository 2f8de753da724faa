#!/usr/bin/env bash
# Multi-GPU hosts under SLURM: one process per host, each driving all of its GPUs.
#
#   sbatch --nodes=4 --ntasks-per-node=1 --gpus-per-node=8 launch/gpu_multihost.sh \
#       --config=configs/cub200.py --workdir=/shared/runs/cub48 --config.bits=48
#
# jax.distributed.initialize() reads the coordinator (the first node), the number of
# processes and this process's id from SLURM's environment (SLURM_JOB_NODELIST,
# SLURM_NTASKS, SLURM_PROCID); --workdir must be on storage every host sees. Set
# AAH_COORDINATOR_ADDRESS=host:port to override the detected coordinator.
#SBATCH --job-name=aah_jax
#SBATCH --ntasks-per-node=1
set -euo pipefail
export AAH_DISTRIBUTED=1
exec srun --kill-on-bad-exit=1 "${PYTHON:-python}" -m aah_jax.main "$@"
