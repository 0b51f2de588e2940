# drmm-lightning: `make help` lists the targets. Every target that runs Python sets up
# .venv first (create, install torch pins, install the package with its dev extras).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_PINS ?= torch==2.14.1 torchvision==0.29.1
STAMP := $(VENV)/.installed
ARGS ?=
TEST_WORKERS ?= 2
PYTEST = $(BIN)/python -m pytest tests -n $(TEST_WORKERS) --dist worksteal
OUT ?= outputs/gpu_check/$(shell date +%Y%m%d-%H%M%S)
TABLE ?= 1
export DRMM_DATA_DIR ?= $(abspath ../shared/data)

.DEFAULT_GOAL := help
.PHONY: help install train test test-fast table ablation long nuisance bench bench-epoch gpu-check lint clean

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH_PINS)
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

install: $(STAMP) ## create .venv and install the package with its dev extras

train: $(STAMP) ## train the default experiment (drmm5_nrm, normalized render, semi-sup MNIST, N_L=100); ARGS="..."
	$(BIN)/drmm-train $(ARGS)

test: $(STAMP) ## run the whole test suite on TEST_WORKERS=2 processes of one thread each (DRMM_NATIVE_BF16=0 make test: precision=auto as fp32)
	$(PYTEST) $(ARGS)

test-fast: $(STAMP) ## the test suite without the slow end-to-end runs
	$(PYTEST) -m "not slow" $(ARGS)

table: $(STAMP) ## reproduce a paper table on this machine: TABLE=1|3|4|5, ARGS="--budget ..."
	$(BIN)/python scripts/reproduce.py --table $(TABLE) $(ARGS)

ablation: $(STAMP) ## the render-path ablation (docs/results.md), every row x seeds 1-3; ARGS="--only ... --seeds ..."
	$(BIN)/python scripts/ablation.py $(ARGS)

long: $(STAMP) ## issue 28's long runs (part L), each resumed where it stopped: nohup make long > long.log 2>&1 &
	WANDB_MODE=offline $(BIN)/python scripts/campaign.py run --part L $(ARGS)

nuisance: $(STAMP) ## issue 29's nuisance probing (part N): trains, then probes, each run; skips what is done
	WANDB_MODE=offline $(BIN)/python scripts/campaign.py run --part N $(ARGS)

bench: $(STAMP) ## speed: the EG and CNN steps at every setting (JSON + table in outputs/bench), the data pipeline
	$(BIN)/python scripts/bench_step.py $(ARGS)
	$(BIN)/python scripts/bench_data.py

bench-epoch: $(STAMP) ## one epoch of the default experiment, fp32 and bf16 + channels-last, timed (~9 min on CPU)
	$(BIN)/python scripts/bench_epoch.py --name fp32 precision=fp32 $(ARGS)
	$(BIN)/python scripts/bench_epoch.py --name bf16+cl precision=bf16 $(ARGS)

gpu-check: $(STAMP) ## on a GPU machine: benchmarks, 3-epoch trainer=gpu run, render-argmin cost, ddp smoke run (scripts/gpu_check.sh)
	PY=$(BIN)/python OUT=$(OUT) bash scripts/gpu_check.sh

lint: $(STAMP) ## ruff lint and format check, mypy type check (CI runs it before the tests)
	$(BIN)/ruff check drmm_lightning scripts tests
	$(BIN)/ruff format --check drmm_lightning scripts tests
	$(BIN)/mypy

clean: ## remove caches and build files (keeps .venv and outputs/)
	rm -rf build dist *.egg-info .pytest_cache .ruff_cache
	find . -name __pycache__ -prune -exec rm -rf {} +
