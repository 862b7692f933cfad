# Two commands set everything up on a fresh machine with only python3: `make run`, `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
RUN_DIR ?= runs/demo

.PHONY: run test fuzz bench lint clean bytecode

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

# The package's bytecode, compiled ahead: an editable install compiles none, and where
# PYTHONDONTWRITEBYTECODE is set every command would compile its ~90 modules again (0.1 s).
bytecode: $(STAMP)
	$(BIN)/python -m compileall -q rlreco

run: bytecode
	$(BIN)/rlreco prepare --out $(RUN_DIR) --force
	$(BIN)/rlreco simulate $(RUN_DIR) --visits 1000000
	# the benchmark: a learner started from 80% of the customers, judged on the other 20%
	$(BIN)/rlreco prepare --out $(RUN_DIR)-holdout --force --holdout customers:0.2 --json > /dev/null
	$(BIN)/rlreco sweep $(RUN_DIR)-holdout --out $(RUN_DIR)-sweep --force \
		--epsilons 0,0.01,0.05,0.1,0.2 --replicates 3 --visits 300000
	@echo "sweep plots: $(RUN_DIR)-sweep/plots/"

test: bytecode
	$(BIN)/python -m pytest -q
	# the kernels once more for a generic CPU (no host-specific instructions), with their own
	# cache, and as plain Python (NUMBA_DISABLE_JIT: the pure-Python twin of every kernel)
	NUMBA_CPU_NAME=generic NUMBA_CACHE_DIR=.numba-generic $(BIN)/python -m pytest -q -p no:cacheprovider tests/test_kernels.py
	NUMBA_DISABLE_JIT=1 $(BIN)/python -m pytest -q -p no:cacheprovider tests/test_kernels.py

# Long fuzzing: random seeds, RLRECO_FUZZ_SECONDS (default 600) per input surface, the surfaces
# one after the other; FUZZ_TESTS picks test files or ids (e.g. one file per process).
FUZZ_TESTS ?= tests/test_fuzz_*.py
fuzz: $(STAMP)
	HYPOTHESIS_PROFILE=fuzz RLRECO_FUZZ_SECONDS=$${RLRECO_FUZZ_SECONDS:-600} \
		$(BIN)/python -m pytest -q $(FUZZ_TESTS)

bench: bytecode
	$(BIN)/python -m pytest bench -o python_files='bench_*.py' -o python_functions='bench_*' --benchmark-only -q

lint: $(STAMP)
	$(BIN)/ruff check rlreco tests bench
	$(BIN)/mypy

clean:
	rm -rf $(VENV) runs .pytest_cache .benchmarks .numba-generic .hypothesis
	find rlreco bench tests -name '*.nb[ic]' -delete
