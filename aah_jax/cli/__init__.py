"""The command-line programs (aah-train, aah-prepare, aah-convert, aah-eval, aah-index,
aah-search, aah-explain, aah-plan), one module each, and what the tools over a run's workdir
share (``common``). May import every part of aah_jax."""
