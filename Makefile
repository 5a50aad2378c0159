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
# The terminal shows Snakemake's step counter and the [progress] lines, not every job's block and shell command
# (--quiet rules host reason; each job's full log is its logs/<rule>/... file), and ends with the headline table.
# The same Snakemake invocation writes the HTML report when the workflow is done (--report-after-run): the run's
# target already holds every file of the report, so `make report`'s two extra invocations (each parsing the
# workflow and checking the DAG again) would find nothing to do but the report itself.
run: $(STAMP)
	$(BIN)/python -m cbedtdc.runstate unlock-if-stale
	$(BIN)/python -m cbedtdc.runstate follow --pid $$$$ --interval 15 & \
	$(BIN)/snakemake --profile local --cores $(CORES) --quiet rules host reason \
		--report results/report.html --report-after-run
	@$(BIN)/cbedtdc table results/metrics/summary.json
	@echo "Summary: results/metrics/summary.json; report: results/report.html"

# The report of the run under results/: that run's saved configuration (results/run_config.yaml) is passed back,
# any missing figure or table is redrawn from the saved results (only the rules in REPORT_RULES may run: never a
# training or data rule), then the HTML report. CONFIG=my.yaml reports with another configuration file.
CONFIG ?= $(wildcard results/run_config.yaml)
REPORT_RULES := run_config plots gallery robustness_plot report_files
REPORT_SNAKEMAKE = $(BIN)/snakemake --profile local --cores 1 $(if $(CONFIG),--configfile $(CONFIG))

report: $(STAMP)
	$(REPORT_SNAKEMAKE) --quiet rules host reason --allowed-rules $(REPORT_RULES) -- report_files
	$(REPORT_SNAKEMAKE) --quiet rules host reason --report results/report.html
	@echo "Report: results/report.html"

# Two pytest workers (pytest-xdist), one test file each at a time (--dist loadfile keeps a file's module fixtures in
# one worker): most tests wait on one single-threaded subprocess (Snakemake, an MPI launch), so the 2 cores of a CI
# machine were half idle with one worker. The costliest files go out first (tests/conftest.py, COSTLIEST_FIRST).
# TEST_WORKERS=0 runs everything in one process. The 15 slowest tests are listed at the end, so the suite's cost
# stays visible.
TEST_WORKERS ?= 2
test: $(STAMP)
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m pytest -q --durations=15 $(if $(filter-out 0,$(TEST_WORKERS)),-n $(TEST_WORKERS) --dist loadfile)

# Where the training jobs of the run in this directory stand (epoch, images/s, ETA), read from logs/.
status: $(STAMP)
	$(BIN)/python -m cbedtdc.runstate status

clean:
	rm -rf results logs benchmarks .snakemake
