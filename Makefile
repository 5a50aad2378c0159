# The two set-up commands of the README:
#   make run   -> create .venv if needed, run the default pipeline on built-in data
#   make test  -> create .venv if needed, run the test suite
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CORES ?= 2
STAMP := $(VENV)/.installed

.PHONY: run test venv clean report status

venv: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.txt
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

# A run killed with SIGKILL (or a lost terminal) leaves Snakemake's lock: remove it when no process of the old run
# still works here (cbedtdc/runstate.py), then resume. One [progress] line per training epoch goes to the terminal.
run: $(STAMP)
	$(BIN)/python -m cbedtdc.runstate unlock-if-stale
	$(BIN)/python -m cbedtdc.runstate follow --pid $$$$ --interval 15 & \
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/snakemake --profile local --cores $(CORES)
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/snakemake --profile local --cores 1 --report results/report.html
	@echo "Summary: results/metrics/summary.json   Report: results/report.html"

report: $(STAMP)
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/snakemake --profile local --cores 1 --report results/report.html

test: $(STAMP)
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m pytest -q

# Where the training jobs of the run in this directory stand (epoch, images/s, ETA), read from logs/.
status: $(STAMP)
	$(BIN)/python -m cbedtdc.runstate status

clean:
	rm -rf results logs benchmarks .snakemake
