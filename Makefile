# knowpack: common tasks. `make test` sets up $(VENV) on first use.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: install test demo lint format organism

install: $(VENV)/.installed

# torch is pinned and installed first so that the loose `torch>=2.4` requirement of the package
# never pulls a CUDA build: on our machines this finds the local CPU wheel.
$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(VENV)/bin/pip install torch==2.13.0
	$(VENV)/bin/pip install -e '.[dev]'
	touch $@

test: $(VENV)/.installed
	$(PY) -m pytest -q

demo: $(VENV)/.installed
	$(VENV)/bin/knowpack demo --out out/demo

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check src tests

format: $(VENV)/.installed
	$(VENV)/bin/ruff format src tests

organism: $(VENV)/.installed
	$(VENV)/bin/knowpack world build --out build/organism
