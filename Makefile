# Entry points on a fresh machine: `make demo` (the main job on built-in sample data), `make test`
# (the whole suite) and `make test-quick` (without the end-to-end runs marked slow). All create or
# reuse the virtualenv in $(VENV).
VENV  ?= .venv
PY    := $(VENV)/bin/python
CLI   := $(VENV)/bin/alexnet-dali
# On a machine without a GPU install the CPU build of torch first; an unpinned `torch` pulls
# several GB of CUDA wheels. Override e.g. TORCH_SPEC="torch --index-url <your index>".
TORCH_SPEC ?= torch==2.13.0
DEMO  ?= demo

.PHONY: venv demo test test-quick clean-demo

venv: $(VENV)/.installed

$(VENV)/.installed: setup.cfg pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_SPEC)
	$(PY) -m pip install -q -e '.[viz,onnx,s3,dev]'
	touch $@

demo: venv clean-demo
	$(CLI) sample-data $(DEMO)/raw --classes 4 --train-per-class 64 --val-per-class 16 --with-odd-files
	$(CLI) preprocess $(DEMO)/raw $(DEMO)/shards
	$(CLI) train $(DEMO)/shards --config configs/paper.toml --config configs/short-run.toml \
		--config configs/demo.toml --run-dir $(DEMO)/run
	$(CLI) eval $(DEMO)/shards --checkpoint $(DEMO)/run --tencrop --json $(DEMO)/run/eval.json
	$(CLI) figures $(DEMO)/run --data $(DEMO)/shards

test: venv
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q

test-quick: venv
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q -m "not slow"

# `make demo` starts afresh: it deletes the previous demo's $(DEMO)/ (data, run, figures) first.
clean-demo:
	@if [ -e $(DEMO) ]; then echo "make: deleting $(DEMO)/ (the previous demo's data and run)"; fi
	rm -rf $(DEMO)
