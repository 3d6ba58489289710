# Two commands on a fresh clone: `make demo` and `make test`. Both set everything up.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
APT_PACKAGES := docker-registry chromium age skopeo apache2-utils openssl
export NBMODELPACK_NO_PROGRESS ?=

.PHONY: demo test test-fast lab venv system-deps lint typecheck bench clean labext

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

# The doctests of the core and the doors that need no torch and no network, in a process of
# their own with a throw-away NBMODELPACK_HOME (some examples open a store).
DOCTESTS := nbmodelpack/errors.py nbmodelpack/paths.py nbmodelpack/_files.py nbmodelpack/version.py \
	nbmodelpack/config.py nbmodelpack/extras.py nbmodelpack/progress.py nbmodelpack/bundle \
	nbmodelpack/store nbmodelpack/remote nbmodelpack/commands nbmodelpack/exchange.py nbmodelpack/labapi

# pytest exits 5 when it collected nothing: a failure, and said in words.
define pytest
	$(BIN)/python -m pytest $(1); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "error: pytest collected no tests" >&2; fi; exit $$rc
endef

# Everything: doctests, unit tests, notebooks, registry, serving and browser end-to-end tests.
test: system-deps venv labext
	NBMODELPACK_HOME=$$(mktemp -d) $(call pytest,-q --doctest-modules $(DOCTESTS) tests/e2e/processes.py)
	$(call pytest,-q $(PYTEST_ARGS))

# Unit tests only (no e2e, notebooks, browser, registry, nor tests marked slow): under a minute.
test-fast: venv
	NBMODELPACK_HOME=$$(mktemp -d) $(call pytest,-q --doctest-modules $(DOCTESTS))
	$(call pytest,-q -m "not e2e and not slow" $(PYTEST_ARGS))

# The JupyterLab sidebar: TypeScript in labextension/, built with jlpm (from the venv's
# jupyterlab) into nbmodelpack/labextension/ (shipped prebuilt in the wheel). The lock
# file pins every npm package; Playwright never downloads a browser (Debian's chromium).
LABEXT_SRC := $(wildcard labextension/src/*.ts labextension/style/*) labextension/package.json labextension/tsconfig.json
labextension/node_modules/.yarn-state.yml: labextension/package.json labextension/yarn.lock | venv
	cd labextension && PATH=$(abspath $(BIN)):$$PATH PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 jlpm install --immutable
	touch $@

nbmodelpack/labextension/package.json: $(LABEXT_SRC) labextension/node_modules/.yarn-state.yml
	cd labextension && PATH=$(abspath $(BIN)):$$PATH jlpm build:prod
	touch $@

labext: nbmodelpack/labextension/package.json

# JupyterLab with the sidebar as built here (wins over an installed copy) and the tutorials.
# As root (a container, a fresh VM) Jupyter refuses to start without --allow-root: pass it then.
ALLOW_ROOT := $(if $(filter 0,$(shell id -u)),--allow-root)
lab: venv labext
	@mkdir -p build/labextensions && ln -sfn ../../nbmodelpack/labextension build/labextensions/nbmodelpack
	$(BIN)/jupyter lab --notebook-dir=notebooks $(ALLOW_ROOT) \
	  --LabServerApp.extra_labextensions_path=$(CURDIR)/build/labextensions \
	  --ServerApp.jpserver_extensions="{'nbmodelpack.labapi': True}" $(LAB_ARGS)

lint: venv
	$(BIN)/ruff check nbmodelpack tests bench scripts
	$(BIN)/mypy

bench: venv
	for b in bench/*.py; do $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) .demo build dist test-artifacts labextension/node_modules labextension/lib nbmodelpack/labextension
