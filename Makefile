# The two commands a new user runs on a fresh machine: `make demo` and `make test`.
# Both create the virtual environment in .venv/ when it is missing (or pyproject.toml changed).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.maskds-installed

.PHONY: demo test venv clean-demo

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

## Synthetic data -> cache -> EDA -> 2-fold training -> soft-voting inference with TTA -> score.
demo: $(STAMP)
	bash scripts/demo.sh

## The whole test suite (end-to-end tests included; they launch real 1- and 2-process runs on the CPU).
test: $(STAMP)
	$(BIN)/python -m pytest

clean-demo:
	rm -rf demo
