# The two commands of the README. Both create ./.venv on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Test processes for `make test` (pytest-xdist). Each takes whole files (--dist loadfile): a file's tests
# share its fixtures and fixed Redis databases. Files with a `slow` test are handed out first
# (tests/conftest.py), so the long ones do not start last. TEST_WORKERS=0 runs in one process.
TEST_WORKERS ?= 2

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
