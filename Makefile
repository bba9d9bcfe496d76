# DeconvNet: every target installs what it needs into .venv first.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
EXP    ?= experiments/table1
ARGS   ?=

.DEFAULT_GOAL := help
.PHONY: help setup test test-fast lint demo data train-stage1 train-stage2 train-fcn \
        ensemble-eval proposals table1 sweep bench clean

help:  ## list the targets
	@grep -E '^[a-zA-Z0-9_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  %-15s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	@# albumentations installs opencv-python-headless, whose cv2 can shadow the
	@# contrib build (EdgeBoxes lives in contrib): reinstall contrib last.
	@$(PY) -c "import cv2, sys; sys.exit(0 if hasattr(cv2, 'ximgproc') and hasattr(cv2.ximgproc, 'createEdgeBoxes') else 1)" || \
	  $(PY) -m pip install --quiet --no-deps --force-reinstall \
	    "opencv-contrib-python-headless==$$($(PY) -c 'import importlib.metadata as m; print(m.version("opencv-contrib-python-headless"))')"
	@touch $(STAMP)

setup: $(STAMP)  ## create .venv and install the project with its test extras

test: $(STAMP)  ## run the whole test suite
	$(PY) -m pytest -q

test-fast: $(STAMP)  ## run the tests, skipping the slow end-to-end ones
	$(PY) -m pytest -q -m "not slow"

lint: $(STAMP)  ## ruff check
	$(VENV)/bin/ruff check src tests benchmarks

clean:  ## remove caches (keeps .venv and outputs)
	rm -rf .pytest_cache .ruff_cache build src/*.egg-info
