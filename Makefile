# Quick start: `make demo` (phantoms -> PGL/BYOL pretraining -> fine-tuning -> segmentation -> report)
# and `make test`.
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
	# an editable install, so edits take effect; setuptools' notice about editable installs is silenced
	PYTHONWARNINGS=ignore $(PY) -m pip install --quiet -e ".[test,report]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/pgl demo --out $(DEMO_OUT) $(DEMO_ARGS)

test: $(STAMP)
	$(PY) -m pytest -q

benchmark: $(STAMP)
	$(PY) benchmarks/pretrain_throughput.py
	$(PY) benchmarks/segment_end_to_end.py
	$(PY) benchmarks/startup.py
	# fine-tuning as Dice per minute: about 80 minutes on 2 CPU cores
	$(PY) benchmarks/finetune_speed.py --plot

clean:
	rm -rf $(VENV) $(DEMO_OUT)
