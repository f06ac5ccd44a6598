# foldstack: `make help` lists the targets. Variables: COMP (competition config), DATA (a folder in
# the Kaggle layout, default data/$(COMP)), SET (dotted config overrides, e.g. SET="folds.k=3").
SHELL := /bin/bash
.DEFAULT_GOAL := help
VENV ?= .venv
PY := $(VENV)/bin/python
COMP ?= isic2024
DATA ?= data/$(COMP)
SET ?=
FORCE ?=
ARGS = --comp $(COMP) --data $(DATA) --set "$(SET)"

.PHONY: help setup data folds check-data demo test lint

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  make %-12s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

setup: ## create .venv, install the pinned requirements and the package (editable)
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -e .

data: ## write the embedded synthetic competition (real Kaggle layout) to data/<comp> (or DATA=dir)
	$(PY) pipelines/data.py $(ARGS)

folds: ## patient-grouped, target-stratified folds -> runs/<comp>/folds.csv (FORCE=1 to replace)
	$(PY) pipelines/folds.py $(ARGS) $(if $(FORCE),--force)

check-data: ## validate the files of a Kaggle-layout folder (DATA=dir) and print a summary
	$(PY) pipelines/check_data.py $(ARGS)

demo: ## the main job on the embedded data: data -> check-data -> folds (grows as stages land)
	$(MAKE) data COMP=$(COMP)
	$(MAKE) check-data COMP=$(COMP)
	$(MAKE) folds COMP=$(COMP) FORCE=1

test: ## run the test suite (what CI runs)
	$(PY) -m pytest -q

lint: ## ruff over src/ pipelines/ tests/
	$(VENV)/bin/ruff check src pipelines tests
