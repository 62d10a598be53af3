# Two entry points for a fresh machine: `make demo` (whole pipeline on the synthetic demo corpus) and `make test`.
VENV   ?= .venv
PYTHON ?= python3
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.aver-installed

.PHONY: venv demo test bench clean-demo

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip wheel
	$(BIN)/python -m pip install -q -e '.[dev]'
	# retinaface-pytorch pins torch==1.9 in its metadata; its code runs on current torch, so install it alone.
	$(BIN)/python -m pip install -q --no-deps 'retinaface-pytorch==0.0.8'
	touch $(STAMP)

venv: $(STAMP)

demo: venv
	$(BIN)/dvc repro
	$(BIN)/dvc metrics show
	@echo "report: runs/report/index.html"

test: venv
	$(BIN)/python -m pytest -q

bench: venv
	$(BIN)/python benchmarks/audio.py
	$(BIN)/python benchmarks/video.py
	$(BIN)/python benchmarks/accuracy.py
	$(BIN)/python benchmarks/pipeline.py
