# Two commands for a newcomer: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: run test lint check system-deps bench clean

$(VENV)/.base: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -U pip
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.test: $(VENV)/.base pyproject.toml
	$(BIN)/pip install -q -e '.[test]'
	touch $@

## Install into .venv and start the server on https://127.0.0.1:8443 (data in ./data).
run: $(VENV)/.base
	$(BIN)/tessera serve

## Install what the tests need (Debian packages too, when root) and run the whole suite.
test: $(VENV)/.test system-deps
	$(BIN)/pytest -n 3 --dist loadfile --durations=30 $(PYTEST_ARGS)

## Formatting, lint and types, as CI runs them.
lint: $(VENV)/.test
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy

check: lint test

system-deps:
	@scripts/install-system-deps

## Benchmarks against the peers named in each issue (see README).
bench: $(VENV)/.test system-deps
	$(BIN)/python bench/issue.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
