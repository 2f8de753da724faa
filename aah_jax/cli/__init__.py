"""Command-line tools over a run's workdir: aah-eval, aah-index, aah-search."""
