"""Foundations every role uses: file writing, the workdir lock, the device mesh, multi-host
start-up, preemption, the compile cache, input normalisation. Imports nothing else of aah_jax."""
