# Quick start: `make demo` (the clinician's path on phantoms: PGL pretraining -> fine-tuning -> segmentation ->
# report, about 3 minutes on 2 CPU cores) and `make test`. `make compare`: the paper's comparison (13-31 minutes).
# Each target creates .venv and installs what it needs on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_OUT ?= demo_output
COMPARE_OUT ?= compare_output
# pgl_engine/comparison/config.py: SMALL_COMPARISON (Testing/test_demo.py keeps the two equal)
COMPARE_ARGS ?= --unlabeled 16 --labeled 2 --test 4 --seeds 2 --pretrain-steps 200 --finetune-steps 200

.PHONY: demo compare test test-fast benchmark clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# the CPU build of torch 2.13.0 (any other spec may pull a multi-GB CUDA build)
	$(PY) -m pip install --quiet "torch==2.13.0"
	# an editable install, so edits take effect; setuptools' notice about editable installs is silenced.
	# torch named again: nnunetv2 (test) pulls torchvision, whose newest release would replace torch
	PYTHONWARNINGS=ignore $(PY) -m pip install --quiet -e ".[test,report]" "torch==2.13.0"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/pgl demo --out $(DEMO_OUT) $(DEMO_ARGS)

compare: $(STAMP)
	$(VENV)/bin/pgl compare --out $(COMPARE_OUT) $(COMPARE_ARGS)

test: $(STAMP)
	$(PY) -m pytest -q

# the fast tier: the tests not marked slow (docs/tests.md)
test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

benchmark: $(STAMP)
	$(PY) benchmarks/pretrain_throughput.py
	$(PY) benchmarks/segment_end_to_end.py
	$(PY) benchmarks/startup.py
	# fine-tuning as Dice per minute: about 80 minutes on 2 CPU cores
	$(PY) benchmarks/finetune_speed.py --plot

clean:
	rm -rf $(VENV) $(DEMO_OUT) $(COMPARE_OUT)
