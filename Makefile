# Two entry points for a fresh machine: `make demo` (whole pipeline on the synthetic demo corpus) and `make test`.
VENV   ?= .venv
PYTHON ?= python3
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.aver-installed

.PHONY: venv demo test bench

# Offline weights: use ../shared/models when it exists; otherwise the registry downloads into ~/.cache/aver.
ifneq ($(wildcard ../shared/models),)
export AVER_MODELS_DIR ?= $(abspath ../shared/models)
endif
export PATH := $(abspath $(BIN)):$(PATH)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip wheel
	$(BIN)/python -m pip install -q -e '.[dev]'
	# retinaface-pytorch pins torch==1.9 in its metadata; its code runs on current torch, so install it alone.
	$(BIN)/python -m pip install -q --no-deps 'retinaface-pytorch==0.0.8'
	touch $(STAMP)

venv: $(STAMP)

demo: venv
	dvc repro
	aver metrics
	@echo "HTML report: $(abspath runs/report/index.html)"

test: venv
	python -m pytest -q

bench: venv
	python benchmarks/audio.py
	python benchmarks/detection.py
	python benchmarks/video.py
	python benchmarks/embeddings.py
	python benchmarks/accuracy.py
	python benchmarks/pipeline.py
