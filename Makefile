# `make demo` and `make test` each create .venv when it is missing, install netlab into it, and run.
# `make test` first runs the linters (ruff check + format, import contracts), then the suite.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
WORKDIR ?= runs/demo
DEMO_CONFIG ?= configs/diffusion/digits_dit.py:cpu
PYTEST_ARGS ?= -n auto --dist loadfile

.PHONY: demo test lint install install-dev clean

# The demo needs only the runtime dependencies; the suite and linters add the `dev` extra.
$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

install: $(VENV)/.installed

install-dev: $(VENV)/.installed-dev

demo: install
	$(PY) -m netlab.main --config $(DEMO_CONFIG) --workdir $(WORKDIR)

lint: install-dev
	$(VENV)/bin/ruff check netlab configs tests bench
	$(VENV)/bin/ruff format --check netlab configs tests bench
	$(VENV)/bin/lint-imports

test: install-dev lint
	$(PY) -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) runs
