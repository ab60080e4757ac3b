# Two entry points that work on a fresh machine: each creates .venv and installs what it needs.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/pip --disable-pip-version-check -q
SOURCES := lp_ray tests benchmarks tools examples

.PHONY: demo test unit lint format install clean

$(BIN)/python:
	$(PY) -m venv $(VENV)

# torch first, pinned: installing it through a dependency range would pull a multi-GB CUDA build.
$(VENV)/.installed: $(BIN)/python pyproject.toml constraints.txt
	$(PIP) install -c constraints.txt torch==2.13.0
	$(PIP) install -c constraints.txt -e '.[test]'
	touch $@

install: $(VENV)/.installed

demo: install
	$(BIN)/lp-ray run

# Lint first: a style or size problem fails in seconds, not after the whole suite. Two xdist workers:
# one fills the other's idle core while a process starts (tests/conftest.py says how tests are grouped).
TEST_WORKERS ?= 2
test: lint
	$(BIN)/pytest -q -n $(TEST_WORKERS) --dist loadgroup

# The fast loop: everything but the end-to-end tests (no Ray Train fits).
unit: install
	$(BIN)/pytest -q -m "not e2e"

lint: install
	$(BIN)/ruff check $(SOURCES)
	$(BIN)/ruff format --check $(SOURCES)
	$(BIN)/python tools/check_file_sizes.py

format: install
	$(BIN)/ruff check --fix $(SOURCES)
	$(BIN)/ruff format $(SOURCES)

clean:
	rm -rf $(VENV) runs mlflow.db mlflow.db.lock mlartifacts mlruns
