# `make run`: install into .venv and run the main job on the embedded default dataset.
# `make test`: install into .venv and run the test suite.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
WORKDIR ?= runs/default

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[test]'
	touch $@

.PHONY: install run test
install: $(VENV)/.installed

run: install
	$(VENV)/bin/python -m aah_jax.main --config=configs/default.py --workdir=$(WORKDIR)

test: install
	$(VENV)/bin/python -m pytest -n 2 --dist loadfile tests
