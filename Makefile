# DeconvNet: every target installs what it needs into .venv first.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
EXP    ?= experiments/table1
ARGS   ?=

.DEFAULT_GOAL := help
.PHONY: help setup test test-fast lint demo data train-stage1 train-stage2 train-fcn \
        ensemble-eval proposals table1 sweep bench clean mutation

help:  ## list the targets
	@grep -E '^[a-zA-Z0-9_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  %-15s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@# A new .venv takes about 6.5 GiB (PyTorch's CUDA build): say so before pip runs out.
	@test -x $(PY) || $(PYTHON) -c "import shutil, sys; free = shutil.disk_usage('.').free / 2**30; \
	  free < 7 and sys.stderr.write(f'warning: {free:.1f} GiB free on this disk; a new $(VENV) takes about 6.5 GiB (PyTorch with its CUDA libraries): free some space if pip stops with [Errno 28] No space left on device\n')"
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	@# A plain opencv-python(-headless), pulled in by another package (albumentations, for
	@# one), shadows the contrib build's cv2 (EdgeBoxes lives in contrib): reinstall contrib.
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
	$(VENV)/bin/ruff check src tests benchmarks tools

DATA ?= data
data: $(STAMP)  ## download PASCAL VOC 2012, SBD and the Structured Edge model into DATA (default data/)
	$(VENV)/bin/deconvnet download voc2012 --root $(DATA)
	$(VENV)/bin/deconvnet download sbd --root $(DATA)
	$(VENV)/bin/deconvnet download edge-model --root $(DATA)/models

train-stage1: $(STAMP)  ## DeconvNet stage 1 of EXP (default experiments/table1; ARGS=key=value overrides)
	$(VENV)/bin/deconvnet train $(EXP)/stage1.yaml $(ARGS)

train-stage2: $(STAMP)  ## DeconvNet stage 2 of EXP, from the stage-1 final checkpoint
	$(VENV)/bin/deconvnet train $(EXP)/stage2.yaml $(ARGS)

train-fcn: $(STAMP)  ## FCN-8s of EXP on whole images
	$(VENV)/bin/deconvnet train $(EXP)/fcn8s.yaml $(ARGS)

proposals: $(STAMP)  ## EdgeBox proposals of EXP's splits (train, val, eval), cached where stage 2 and eval read them
	$(VENV)/bin/deconvnet proposals $(EXP)/stage2.yaml $(ARGS)

demo: $(STAMP)  ## the whole pipeline on a synthetic VOC set, on CPU (resumable)
	@# the synthetic set is part of the recipe (experiments/demo/data.yaml): made when missing
	$(VENV)/bin/deconvnet pipeline experiments/demo $(ARGS)

table1: $(STAMP)  ## the paper's recipe end to end: data check, proposals, stage 1, stage 2, FCN-8s, eval, test archive
	$(VENV)/bin/deconvnet pipeline $(EXP) $(ARGS)

ensemble-eval: $(STAMP)  ## Table 1 rows (FCN-8s, DeconvNet, EDeconvNet, +CRF) of EXP's eval.yaml: results.csv/md, chart, W&B
	$(VENV)/bin/deconvnet eval $(EXP)/eval.yaml $(ARGS)

SWEEP ?= configs/sweeps/stage1_lr_wd.yaml
sweep: $(STAMP)  ## create the W&B sweep SWEEP and run an agent for it (needs `wandb login`)
	@export PATH="$(CURDIR)/$(VENV)/bin:$$PATH"; \
	  id=$$(wandb sweep $(SWEEP) 2>&1 | tee /dev/stderr | sed -n 's/.*wandb agent \([^ ]*\).*/\1/p' | tail -n 1); \
	  test -n "$$id" || { echo "wandb sweep did not return a sweep id (logged in? see above)"; exit 1; }; \
	  wandb agent $$id

# The training-step benchmark defaults to the paper's sizes (a GPU's work); on a CPU try
# BENCH_TRAIN_ARGS="--width 0.125 --batch 4 --size 64 --steps 3".
BENCH_TRAIN_ARGS ?=
bench: $(STAMP)  ## the benchmarks, one JSON object each: data loading, inference, training step (BENCH_TRAIN_ARGS)
	$(PY) benchmarks/data.py
	$(PY) benchmarks/inference.py
	$(PY) benchmarks/train_throughput.py $(BENCH_TRAIN_ARGS)
MODULES ?=
mutation: $(STAMP)  ## mutation testing (mutmut) of the modules that decide results; MODULES="metrics score" for some; summary in build/mutation/summary.md
	$(PY) -m pip install --quiet -e '.[mutation]'
	nice -n 10 $(PY) tools/mutation.py $(if $(MAX_CHILDREN),--max-children $(MAX_CHILDREN)) $(MODULES)

clean:  ## remove caches (keeps .venv and outputs)
	rm -rf .pytest_cache .ruff_cache build src/*.egg-info
