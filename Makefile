# Quick start: `make demo` (synthetic cohort -> pretraining) and `make test`.
# Each target creates .venv and installs what it needs on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_OUT ?= demo_output

.PHONY: demo test benchmark clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# the CPU build of torch 2.13.0 (any other spec may pull a multi-GB CUDA build)
	$(PY) -m pip install --quiet "torch==2.13.0"
	$(PY) -m pip install --quiet -e ".[test,report]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/pgl phantom --out $(DEMO_OUT)/phantoms --count 12 --spacing-scale 2
	$(VENV)/bin/pgl pretrain --images $(DEMO_OUT)/phantoms/images --out $(DEMO_OUT)/pgl_model \
		--cache-dir $(DEMO_OUT)/cache --steps 150 --patch-size 48 48 32 --spacing 3.2 3.2 6 --overwrite

test: $(STAMP)
	$(PY) -m pytest -q

benchmark: $(STAMP)
	$(PY) benchmarks/pretrain_throughput.py

clean:
	rm -rf $(VENV) $(DEMO_OUT)
