# `make demo` and `make test` each create .venv when it is missing, install netlab into it, and run.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
WORKDIR ?= runs/demo
DEMO_CONFIG ?= configs/diffusion/digits_dit.py:cpu
PYTEST_ARGS ?=

.PHONY: demo test install clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

install: $(VENV)/.installed

demo: install
	$(PY) -m netlab.main --config $(DEMO_CONFIG) --workdir $(WORKDIR)

test: install
	$(PY) -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) runs
