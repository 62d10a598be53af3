# Two entry points for a fresh machine: `make demo` (whole pipeline on the synthetic demo corpus) and `make test`.
VENV   ?= .venv
PYTHON ?= python3
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.aver-installed

.PHONY: venv demo test bench lock

# Offline weights: use ../shared/models when it exists; otherwise the registry downloads into ~/.cache/aver.
ifneq ($(wildcard ../shared/models),)
export AVER_MODELS_DIR ?= $(abspath ../shared/models)
endif
export PATH := $(abspath $(BIN)):$(PATH)

# The exact versions of requirements.lock, not pyproject's ranges: the demo's bytes and the metrics depend on them
# (PyAV bundles FFmpeg and x264). --no-deps: the lock is complete, and retinaface-pytorch's metadata hard-pins
# torch==1.9 although its code runs on current torch (pyproject.toml says more).
$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip wheel
	$(BIN)/python -m pip install -q --no-deps -r requirements.lock
	$(BIN)/python -m pip install -q --no-deps -e .
	touch $(STAMP)

venv: $(STAMP)

demo: venv
	dvc repro
	aver metrics
	@echo "HTML report: $(abspath runs/report/index.html)"

test: venv
	python -m pytest -q

# After a change of pyproject's dependencies: install them into the venv, then pin what is there.
lock: venv
	$(BIN)/python -m pip install -q -e '.[test]'
	{ sed -n '1,2p' requirements.lock; $(BIN)/python -m pip freeze --exclude-editable; } > requirements.lock.new
	mv requirements.lock.new requirements.lock

bench: venv
	python benchmarks/audio.py
	python benchmarks/detection.py
	python benchmarks/video.py
	python benchmarks/embeddings.py
	python benchmarks/accuracy.py
	python benchmarks/pipeline.py
