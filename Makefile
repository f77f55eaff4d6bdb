# The README's two commands. Each creates .venv on a fresh machine and installs what it needs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEMO_DIR ?= runs/demo

.PHONY: demo test test-fast test-all bench gpu test-gpu clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e ".[test]"
	touch $@

$(VENV)/.installed-bench: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e ".[test,bench]"
	touch $@

# The GPU extra (jax[cuda12] pinned to the tested jax) into the same venv; then `make test-gpu`.
$(VENV)/.installed-gpu: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e ".[test,gpu]"
	touch $@

gpu: $(VENV)/.installed-gpu

test-gpu: $(VENV)/.installed-gpu
	JAX_PLATFORMS=cuda $(BIN)/python -m pytest -q

demo: $(VENV)/.installed-test
	$(BIN)/zoo compare configs/compare/digits.yaml --workdir $(DEMO_DIR)/compare_digits
	$(BIN)/zoo eval $(DEMO_DIR)/compare_digits/runs/digits_cnn/seed0

# Everything but the exhaustive registry-wide transform cases (make test-all runs those too): most files
# in two worker processes (pytest-xdist, a file per worker), then alone the files whose tests time
# processes against each other (signals, lost peers, listening sockets), which a second worker's load
# can upset (one SIGTERM test lost its race once in parallel).
SERIAL_TESTS := tests/test_distributed.py tests/test_reliability.py tests/test_hostile_network_and_exports.py
test: $(VENV)/.installed-test
	$(BIN)/python -m pytest -q -n 2 --dist loadfile -m "not exhaustive" $(SERIAL_TESTS:%=--ignore=%) --durations=10
	$(BIN)/python -m pytest -q -m "not exhaustive" $(SERIAL_TESTS) --durations=5

# Every test, with the optional extras the interop tests compare against (PyTorch, torchvision,
# timm, jax2onnx + onnxruntime); jax2onnx goes in without its pins (it would downgrade Orbax).
$(VENV)/.installed-all: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e ".[test,bench,import,tensorboard,onnx]"
	$(BIN)/python -m pip install -q --no-deps torchvision==0.28.0 timm==1.0.31 jax2onnx==0.17.1
	touch $@

test-all: $(VENV)/.installed-all
	$(BIN)/python -m pytest -q

# The quick loop (under a minute on 2 cores): every test but those marked slow (over ~1 s each).
test-fast: $(VENV)/.installed-test
	$(BIN)/python -m pytest -q -m "not slow"

# Results go to runs/bench/<UTC time>/; `make bench OUT=benchmarks` rewrites the committed record.
bench: $(VENV)/.installed-bench
	$(BIN)/python benchmarks/bench.py $(if $(OUT),--out $(OUT))

clean:
	rm -rf $(VENV) runs
