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

.PHONY: demo test lab docs docs-check export clean-nbs check-sync nbtest pytest bench scripts notebooks clean gpu-data gpu-wheels

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

# What scripts/gpu_check.sh needs on a GPU machine, where only a small working tree travels and nothing can be
# downloaded: a CIFAR-10 subset (8,000 training and the 10,000 test images, xz-compressed, under 40 MB) and wheels of
# the packages the machine's Python 3.12 lacks (scripts/gpu_wheels.txt). Neither installs anything here: they run
# with .venv's python when there is one, else $(PYTHON), and the checkout's mesa_nb.
GPU_DATA ?= .cache/gpu-data
GPU_WHEELS ?= .cache/gpu-wheels
GPU_PYTHON ?= 3.12
HERE_PYTHON := $(if $(wildcard $(BIN)/python),$(BIN)/python,$(PYTHON))
GPU_PLATFORMS := manylinux1 manylinux2014 $(foreach v,5 17 24 26 27 28 31 34 35,manylinux_2_$(v))

gpu-data:
	PYTHONPATH=$(CURDIR)$${PYTHONPATH:+:$$PYTHONPATH} $(HERE_PYTHON) scripts/gpu_data.py --src "$(MESA_NB_DATA)" --out $(GPU_DATA)
	du -sh $(GPU_DATA)

gpu-wheels:
	rm -rf $(GPU_WHEELS) && mkdir -p $(GPU_WHEELS)
	$(HERE_PYTHON) -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: -c constraints.txt \
		--python-version $(GPU_PYTHON) --implementation cp $(foreach p,$(GPU_PLATFORMS),--platform $(p)_x86_64) \
		-d $(GPU_WHEELS) $$(grep -v '^#' scripts/gpu_wheels.txt)
	du -sh $(GPU_WHEELS)

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
