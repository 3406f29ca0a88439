# Two commands do all the set-up on a fresh machine with Python 3.11 and pip:
#   make demo   -> local virtual environment + the pipeline on the embedded demo -> results/report.html
#   make test   -> local virtual environment + the test suite
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
CORES  ?= all

.PHONY: setup demo test report lint clean

setup: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-dev.txt constraints.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt -c constraints.txt
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

demo: setup
	$(BIN)/snakemake --cores $(CORES)
	$(BIN)/snakemake --report results/snakemake_report.html
	@echo "Open results/report.html (summary) or results/snakemake_report.html (all figures with captions)."

test: setup
	$(BIN)/python -m pytest

lint: setup
	$(BIN)/python -m ruff check --select F spatialfuse scripts benchmarks tests
	$(BIN)/snakefmt --check Snakefile workflow/rules
	$(BIN)/snakemake --lint

clean:
	rm -rf results .snakemake
