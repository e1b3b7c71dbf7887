# Set-up and everyday commands. Every target builds the environment it needs on a fresh machine.
#   make demo   -- the flagship run (creates .venv, installs what it needs, runs it)
#   make test   -- ruff, mypy and pytest
#   make bench  -- benchmarks against peer libraries (writes benchmarks/results/)
#
# A torch that the base python can already import (a CUDA build, say) is reused through
# --system-site-packages and never replaced; otherwise the CPU build torch==2.13.0 is installed.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_PIN ?= torch==2.13.0
DEMO ?= flagship
DEMO_OUT ?= runs/demo

.PHONY: demo test lint typecheck pytest bench venv clean

$(PY):
	@if $(PYTHON) -c "import torch" 2>/dev/null; then \
		echo "reusing the torch that $(PYTHON) imports"; \
		$(PYTHON) -m venv --system-site-packages $(VENV); \
	else \
		$(PYTHON) -m venv $(VENV); \
	fi
	$(PY) -m pip install --quiet --upgrade pip

# torch first, and only when it is missing, so that an installed build is never swapped out.
$(VENV)/.torch: | $(PY)
	@$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install --quiet $(TORCH_PIN)
	@touch $@

$(VENV)/.demo: pyproject.toml $(VENV)/.torch
	$(PY) -m pip install --quiet -e ".[data,plot]"
	@touch $@

$(VENV)/.dev: pyproject.toml $(VENV)/.torch
	$(PY) -m pip install --quiet -e ".[all]"
	@touch $@ $(VENV)/.demo

venv: $(VENV)/.dev

demo: $(VENV)/.demo
	$(VENV)/bin/nestopt run $(DEMO) --out $(DEMO_OUT)

lint: $(VENV)/.dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(VENV)/.dev
	$(VENV)/bin/mypy

pytest: $(VENV)/.dev
	$(PY) -m pytest -q -m "not slow" $(PYTEST_ARGS)

test: lint typecheck pytest

bench: $(VENV)/.dev
	$(PY) benchmarks/install_peers.py
	$(PY) benchmarks/run_all.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
