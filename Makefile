# gradbench: `make run` (the main job) and `make test` set up .venv themselves when missing.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# The data directory: the user's GRADBENCH_DATA, else the shared mirror beside the checkout.
SHARED_DATA := $(abspath ../shared/data)
ifeq ($(GRADBENCH_DATA),)
ifneq ($(wildcard $(SHARED_DATA)),)
export GRADBENCH_DATA := $(SHARED_DATA)
endif
endif
export GRADBENCH_CACHE ?= $(abspath .cache)
RESULTS ?= results

.PHONY: help venv run test test-fast lint format bench leaderboard clean

help: ## List the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) on PATH (or make PYTHON=python3)"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -e '.[dev]'
	@touch $(STAMP)

venv: $(STAMP) ## Create .venv and install gradbench with dev extras

run: $(STAMP) ## The main job: plain vs ResNet on Fashion-MNIST at depth 20 and 56, then the leaderboard
	$(VENV)/bin/gradbench run image -m plain-20 -m resnet-20 -m plain-56 -m resnet-56 \
		--seeds 0 --steps 150 --batch-size 64 --lr 0.05 --results $(RESULTS)
	$(VENV)/bin/gradbench leaderboard --task image --results $(RESULTS)

test: $(STAMP) ## All tests (under 10 minutes on 2 cores)
	$(VENV)/bin/pytest

lint: $(STAMP) ## ruff check and format check
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP) ## ruff format and autofix
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

bench: $(STAMP) ## Benchmarks: loop overhead, probe overhead, sequence-model speed (ratios side by side)
	$(PY) bench/run_all.py

leaderboard: $(STAMP) ## Leaderboard of everything in results/ (terminal, plus results/leaderboard.md)
	$(VENV)/bin/gradbench leaderboard --results $(RESULTS)
	$(VENV)/bin/gradbench leaderboard --results $(RESULTS) --format markdown --output $(RESULTS)/leaderboard.md

clean: ## Remove .venv and caches (results are kept)
	rm -rf $(VENV) .cache .pytest_cache .ruff_cache *.egg-info
