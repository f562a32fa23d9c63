# `make demo` and `make test` each create .venv when it is missing, install netlab into it, and run.
# `make test` first runs the linters (ruff check + format, import contracts), then the suite.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
WORKDIR ?= runs/demo
DEMO_CONFIG ?= configs/diffusion/digits_dit.py:cpu
PYTEST_ARGS ?=

.PHONY: demo test lint install clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

install: $(VENV)/.installed

demo: install
	$(PY) -m netlab.main --config $(DEMO_CONFIG) --workdir $(WORKDIR)

lint: install
	$(VENV)/bin/ruff check netlab configs tests bench
	$(VENV)/bin/ruff format --check netlab configs tests bench
	$(VENV)/bin/lint-imports

test: install lint
	$(PY) -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) runs
