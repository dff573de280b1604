# mesa_nb: one entry point for users, developers and CI.
#   make demo    the main job on the bundled digits (sets up .venv first)
#   make test    everything CI checks (sets up .venv with the test tools first)
#   make lab     JupyterLab on localhost, for reading and editing nbs/
#   make docs    the documentation site in _docs/site: every notebook executed and rendered, the API reference
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt
NBS := $(shell find nbs -name '*.ipynb' -not -path '*/.ipynb_checkpoints/*')
# Real CIFAR-10 for the tests and notebooks that use it: an explicit MESA_NB_DATA wins; otherwise a
# sibling `shared/data` checkout when there is one (the tests that need it skip without it).
MESA_NB_DATA ?= $(wildcard $(abspath ../shared/data))
export MESA_NB_DATA

.PHONY: demo test lab docs docs-check export clean-nbs check-sync nbtest pytest bench scripts notebooks clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.run: $(BIN)/python setup.py settings.ini constraints.txt
	$(PIP) -e .
	@touch $@

$(VENV)/.test: $(VENV)/.run
	$(PIP) -e '.[test]'
	@touch $@

$(VENV)/.docs: $(VENV)/.test
	$(PIP) -e '.[test,docs]'
	@touch $@

$(VENV)/.dev: $(VENV)/.test
	$(PIP) -e '.[dev]'
	@touch $@

demo: $(VENV)/.run
	$(BIN)/mesa-nb demo

# The order matters: a stale export or an unclean notebook fails fast, before the slow parts.
test: $(VENV)/.test check-sync nbtest pytest docs-check

check-sync: $(VENV)/.test
	$(BIN)/python scripts/check_unchanged.py $(BIN)/nbdev_export
	$(BIN)/python scripts/check_unchanged.py $(BIN)/nbdev_clean

# One BLAS/OpenMP thread per notebook: two workers each spinning two OpenMP threads on two cores run
# several times slower than two single-threaded workers.
nbtest: $(VENV)/.test
	OMP_NUM_THREADS=1 $(BIN)/nbdev_test --n_workers 2 --timing

pytest: $(VENV)/.test
	$(BIN)/python -m pytest -q tests

# The site with every notebook's outputs and figures (the notebooks run as nbdev_test runs them).
docs: $(VENV)/.docs
	OMP_NUM_THREADS=1 $(BIN)/python scripts/build_docs.py --workers 2

# CI: the notebooks already ran in nbtest; build the site from them as committed and check that every
# notebook has a page and every public name of mesa_nb an API entry.
docs-check: $(VENV)/.docs
	$(BIN)/python scripts/build_docs.py --no-execute

bench: $(VENV)/.run
	$(BIN)/python scripts/bench_train.py
	$(BIN)/python scripts/bench_search.py
	$(BIN)/python scripts/bench_surface.py

export: $(VENV)/.test
	$(BIN)/nbdev_export
	$(BIN)/nbdev_clean

lab: $(VENV)/.dev
	$(BIN)/jupyter lab --no-browser --ip 127.0.0.1 $(if $(filter 0,$(shell id -u)),--allow-root) nbs

scripts: $(VENV)/.test
	$(BIN)/jupytext --to py:percent $(NBS)

notebooks: $(VENV)/.test
	$(BIN)/jupytext --update --to ipynb $(patsubst %.ipynb,%.py,$(NBS))
	$(BIN)/nbdev_clean

clean:
	rm -rf $(VENV) build dist *.egg-info _proc _docs
