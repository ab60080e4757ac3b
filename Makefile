# Two entry points that work on a fresh machine: each creates .venv and installs what it needs.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/pip --disable-pip-version-check -q

.PHONY: demo test unit install clean

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

test: install
	$(BIN)/pytest -q

unit: install
	$(BIN)/pytest -q -m "not e2e"

clean:
	rm -rf $(VENV) runs mlflow.db mlartifacts
