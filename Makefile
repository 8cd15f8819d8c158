# dpljax: `make run` (default experiment on the embedded sample), `make test`, `make bench`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-dev

.PHONY: install run test test-all bench twin clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/dpljax $(ARGS)

# Two pytest workers (one per core here; XLA compiles on one thread), each test file kept on one;
# tests/conftest.py shares one compilation cache and compiles at LLVM -O0 (the suite is compile-bound).
TEST_WORKERS ?= 2

test: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow" -n $(TEST_WORKERS) --dist loadfile --durations=25 $(ARGS)

test-all: $(STAMP)
	$(BIN)/python -m pytest -q $(ARGS)

# Throughput of dpljax vs plain PyTorch (benchmarks/README.md); ARGS="--quick" for a subset.
bench: $(STAMP)
	$(BIN)/python -m pip install -q -e ".[bench]"
	$(BIN)/python -m benchmarks.throughput $(ARGS)

# The surrogate twin of Tsai et al. (2021) on all 671 basins (hours; resumes after a kill):
# benchmarks/results/surrogate_twin.{json,md,png}. ARGS="--sample" for the 8 embedded basins.
twin: $(STAMP)
	$(BIN)/python -m benchmarks.surrogate_twin $(ARGS)

clean:
	rm -rf runs multirun .pytest_cache
