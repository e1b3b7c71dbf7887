# Set-up and everyday commands. Every target builds the environment it needs on a fresh machine.
#   make demo   -- the flagship run (creates .venv, installs what it needs, runs it)
#   make test   -- ruff, mypy and pytest
#   make bench  -- benchmarks against peer libraries (writes benchmarks/results/)
#   make docs   -- the API reference and guides, built with warnings as errors (site/)
#
# Which torch: a torch that the base python can already import (a CUDA build, say) is reused through
# --system-site-packages and never replaced. Otherwise $(TORCH_PIN) is installed from TORCH_INDEX_URL, by
# default PyTorch's CPU-only index (about 200 MB instead of the several GB of PyPI's CUDA build on Linux):
#   make test TORCH_INDEX_URL=https://download.pytorch.org/whl/cu126   # a CUDA 12.6 build
#   make test TORCH_INDEX_URL=                                         # PyPI's default build

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_PIN ?= torch==2.13.0
TORCH_INDEX_URL ?= https://download.pytorch.org/whl/cpu
# test processes (pytest-xdist); each pins one torch thread, so 2 fill a 2-core machine; 0 runs in-process.
# --dist loadgroup keeps the tests that share an experiment's quick run in one process (tests/experiments/conftest.py)
TEST_WORKERS ?= 2
DEMO ?= flagship
DEMO_OUT ?= runs/demo

.PHONY: demo test lint typecheck pytest docs bench venv clean

$(PY):
	@if $(PYTHON) -c "import torch" 2>/dev/null; then \
		echo "reusing the torch that $(PYTHON) imports"; \
		$(PYTHON) -m venv --system-site-packages $(VENV); \
	else \
		$(PYTHON) -m venv $(VENV); \
	fi
	$(PY) -m pip install --quiet --upgrade pip

# torch first, and only when it is missing, so that an installed build is never swapped out. It comes from
# TORCH_INDEX_URL without its dependencies (pip's configured find-links and extra indexes are still searched),
# then its dependencies from PyPI; an unreachable index stops here rather than fetching another build.
$(VENV)/.torch: | $(PY)
	@if ! $(PY) -c "import torch" 2>/dev/null; then \
		if [ -n "$(TORCH_INDEX_URL)" ]; then \
			echo "installing $(TORCH_PIN) from $(TORCH_INDEX_URL)"; \
			$(PY) -m pip install --quiet --retries 1 --no-deps --index-url "$(TORCH_INDEX_URL)" "$(TORCH_PIN)" || { \
				echo "could not install $(TORCH_PIN) from $(TORCH_INDEX_URL); set TORCH_INDEX_URL to another index, or to nothing for PyPI's default build" >&2; exit 1; }; \
		else \
			echo "installing $(TORCH_PIN) from PyPI (on Linux, a CUDA build)"; \
		fi; \
		$(PY) -m pip install --quiet "$(TORCH_PIN)"; \
	fi
	@$(PY) -c "import torch; print('using torch', torch.__version__, '(CUDA ' + str(torch.version.cuda) + ')' if torch.version.cuda else '(CPU build)')"
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
	$(PY) -m pytest -q -m "not slow" -n $(TEST_WORKERS) --dist loadgroup $(PYTEST_ARGS)

# the guides and the API reference, from the docstrings; warnings are errors, so a broken page fails CI
docs: $(VENV)/.dev
	$(VENV)/bin/sphinx-build -W --keep-going -q -b html docs site

test: lint typecheck docs pytest

bench: $(VENV)/.dev
	$(PY) benchmarks/install_peers.py
	$(PY) benchmarks/run_all.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache site
