# fpbench: `make report` runs the main job, `make test` runs the tests (README.md).
VENV ?= .venv
PY := $(VENV)/bin/python
GRID ?= main

.PHONY: setup test lint report

# torch==2.13.0 first: its CPU wheel is on disk; an unpinned torch would pull a CUDA build.
# pip byte-compiles what it installs one file at a time (torch alone: 22 s); compileall does
# it on every core. (Not compiling at all is slower: where PYTHONDONTWRITEBYTECODE is set,
# every fresh process, one per benchmark, compiles what it imports again.) Some packages ship
# files that do not compile (test data); pip skips them silently, and so does this.
$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --no-compile torch==2.13.0
	$(PY) -m pip install -q --no-compile -e ".[dev]"
	$(PY) -m compileall -q -j 0 $(VENV)/lib >/dev/null || true
	touch $@

setup: $(VENV)/.installed

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: lint
	$(PY) -m pytest -n auto --dist loadgroup

report: setup
	$(VENV)/bin/fpbench sweep --grid $(GRID)
