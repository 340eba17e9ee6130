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

.PHONY: help venv run test test-fast lint format bench leaderboard clean chromium suite-quick suite-standard

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

test: $(STAMP) chromium ## All tests (under 10 minutes on 2 cores)
	$(VENV)/bin/pytest

# The HTML report's browser test drives Debian's chromium through playwright: installed
# here with apt when missing (as root, or with password-less sudo); where that is not
# possible the one test skips and says why.
chromium: ## Install chromium with apt when missing (for the report's browser test)
	@command -v chromium >/dev/null || command -v chromium-browser >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; elif sudo -n true 2>/dev/null; then SUDO="sudo -n"; \
	  else echo "chromium missing and apt needs root: the browser test will skip"; exit 0; fi; \
	  command -v apt-get >/dev/null || { echo "no apt-get: the browser test will skip"; exit 0; }; \
	  echo "installing chromium with apt (once)"; \
	  { $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null; } \
	    || echo "could not install chromium: the browser test will skip"; }

suite-quick: $(STAMP) ## The quick suite (core pairs of every family, one seed), then its claims
	$(VENV)/bin/gradbench suite quick --results $(RESULTS)
	$(VENV)/bin/gradbench check --suite quick --direction-only --results $(RESULTS)

suite-standard: $(STAMP) ## The standard suite (3 seeds, 1-2 hours), then the article's claims
	$(VENV)/bin/gradbench suite standard --results $(RESULTS)
	$(VENV)/bin/gradbench check --suite standard --results $(RESULTS)

lint: $(STAMP) ## ruff check and format check
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP) ## ruff format and autofix
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

bench: $(STAMP) ## Benchmarks: loop and probe overhead, model speeds (ratios side by side), quick suite time
	$(PY) bench/run_all.py

leaderboard: $(STAMP) ## Leaderboard of everything in results/ (terminal, plus results/leaderboard.md)
	$(VENV)/bin/gradbench leaderboard --results $(RESULTS)
	$(VENV)/bin/gradbench leaderboard --results $(RESULTS) --format markdown --output $(RESULTS)/leaderboard.md

clean: ## Remove .venv and caches (results are kept)
	rm -rf $(VENV) .cache .pytest_cache .ruff_cache *.egg-info
