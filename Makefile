# The two commands of the README. Both create ./.venv on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Test processes for `make test` (pytest-xdist). Each takes whole files (--dist loadfile): a file's tests
# share its fixtures and fixed Redis databases. Files with a `slow` test are handed out first
# (tests/conftest.py), so the long ones do not start last. TEST_WORKERS=0 runs in one process.
# Three on the two-core machine: many tests wait on subprocesses (beats' 10 s ticks, lock expiry,
# worker start-up) and a third process fills those waits (2026-12-04, the whole suite locally:
# 734 s with two, 650 s with three, the machine's CPU busy 1.76 of 2 cores).
TEST_WORKERS ?= 3

.PHONY: demo test lint install install-dev

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

install: $(BIN)/python
	$(BIN)/pip install --quiet -e .

install-dev: $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev]'

demo: install
	$(BIN)/leadscore demo

test: install-dev
	$(BIN)/pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

lint: install-dev
	$(BIN)/ruff check .
	$(BIN)/mypy
