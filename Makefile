# The two commands of the README: `make demo` (main job) and `make test` (lint + tests).
# Each does all set-up by itself on a fresh machine: venv in .venv, pinned dependencies.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev,bench]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/geta graph resnet18

lint: $(STAMP)
	$(VENV)/bin/ruff check geta tests benchmarks
	$(VENV)/bin/ruff format --check geta tests benchmarks

test: lint
	$(PY) -m pytest -n 2 -q

clean:
	rm -rf $(VENV)
