"""The method: losses, the DCC update of B, the train step, the outer iteration, evaluation,
checkpoints, logs and the config's defaults and checks. May import ``common``, ``models``,
``data`` and ``retrieval``."""
