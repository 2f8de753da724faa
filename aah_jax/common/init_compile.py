"""Compiling the programs that initialise variables, faster on CPU and with the same result.

XLA:CPU spends most of an initialisation's compile on the initialisers' random-number code (a
threefry fusion per parameter array), and LLVM's optimisation of it buys nothing: the program
runs once. At XLA's backend optimisation level 1 instead of the default, the compile takes
a third to a half of the time on machine A (README, *Benchmarks*: configs/default.py's network
8.4 → 3.1 s, configs/default_pretrained.py's 15.5 → 7.7 s) and the variables are bitwise the
same (tests/test_models.py checks that on the machine it runs on). Level 0 would be faster
still but changes some initial weights in their last bit, so it is not used. Other backends
compile as they always do.
"""

import jax

CPU_OPTIONS = {'xla_backend_optimization_level': 1}


def compiler_options() -> dict | None:
  """The options for an initialising program on this process's backend (None: XLA's own)."""
  return CPU_OPTIONS if jax.default_backend() == 'cpu' else None


def compile_init(jitted, *args):
  """``jitted.lower(*args).compile()`` with ``compiler_options()``: the executable to call
  with arguments like ``args``."""
  return jitted.lower(*args).compile(compiler_options=compiler_options())
