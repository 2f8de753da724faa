"""Looking at a run or a config: the report, attribute explanations and compile-only plans of
memory and time on TPU/GPU topologies. May import every role but ``cli`` (and ``aah_jax.run``)."""
