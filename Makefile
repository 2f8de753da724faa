# `make run`: install into .venv and run the main job on the embedded default dataset.
# `make test`: install into .venv (with the TPU and GPU compilers, for the compile-only plan
#   tests) and run the test suite.
# `make test-repeat`: the equivalence tests (two layouts, processes or implementations of the
#   same maths, `-m equivalence`) once per XLA flag set below, each of which changes XLA:CPU's
#   code generation or threading and so the float summation order; all must pass.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
WORKDIR ?= runs/default
PYTEST := $(VENV)/bin/python -m pytest -n 2 --dist loadfile

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[test]'
	touch $@

# libtpu and the CUDA plugin let the TPU and GPU compilers run on this host (aah-plan,
# tests/test_plan.py); kept out of `make run`'s install, where JAX would try (and fail,
# noisily) to start TPU and GPU backends on a CPU machine.
$(VENV)/.installed-plan: $(VENV)/.installed
	$(VENV)/bin/pip install --quiet -e '.[plan]'
	touch $@

.PHONY: install install-plan run test test-repeat
install: $(VENV)/.installed
install-plan: $(VENV)/.installed-plan

run: install
	$(VENV)/bin/python -m aah_jax.main --config=configs/default.py --workdir=$(WORKDIR)

test: install-plan
	$(PYTEST) tests

REPEAT_XLA_FLAGS := '' '--xla_cpu_max_isa=AVX2' '--xla_cpu_max_isa=SSE4_2' \
	'--xla_cpu_multi_thread_eigen=false'

test-repeat: install
	@for flags in $(REPEAT_XLA_FLAGS); do \
	  echo "== XLA_FLAGS='$$flags'"; \
	  XLA_FLAGS="$$flags" $(PYTEST) -q -m equivalence tests || exit 1; \
	done
