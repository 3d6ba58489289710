# Two commands on a fresh clone: `make demo` and `make test`. Both set everything up.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
APT_PACKAGES := docker-registry chromium age skopeo apache2-utils openssl
export NBMODELPACK_NO_PROGRESS ?=

.PHONY: demo test lab venv system-deps lint typecheck bench clean

# System packages the tests drive for real (registry, browser, age CLI, skopeo).
system-deps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then echo "apt-get install$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else echo "missing Debian packages:$$missing (run: sudo apt-get install$$missing)"; exit 1; fi; \
	fi

$(BIN)/python:
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# torch/torchvision are pinned (they come from this machine's wheel cache, not a multi-GB download).
$(VENV)/.stamp-install: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

venv: $(VENV)/.stamp-install

demo: venv
	$(BIN)/python scripts/demo.py

test: system-deps venv
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

lab: venv
	$(BIN)/jupyter lab --notebook-dir=notebooks $(LAB_ARGS)

lint: venv
	$(BIN)/ruff check nbmodelpack tests bench scripts
	$(BIN)/mypy

bench: venv
	for b in bench/*.py; do $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) .demo build dist test-artifacts
