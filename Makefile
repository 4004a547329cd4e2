# fpbench: `make report` runs the main job, `make test` runs the tests (README.md).
VENV ?= .venv
PY := $(VENV)/bin/python
GRID ?= main

.PHONY: setup test lint report

# torch==2.13.0 first: its CPU wheel is on disk; an unpinned torch would pull a CUDA build.
# --no-compile: Python compiles what is imported on first import; byte-compiling every
# installed module up front took torch's install from 11 s to 33 s.
$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --no-compile torch==2.13.0
	$(PY) -m pip install -q --no-compile -e ".[dev]"
	touch $@

setup: $(VENV)/.installed

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: lint
	$(PY) -m pytest

report: setup
	$(VENV)/bin/fpbench sweep --grid $(GRID)
