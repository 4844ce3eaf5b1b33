# Two entry points: `make demo` and `make test`. Both build .venv first.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
# pytest-xdist workers for `make test` (0: one process); whole files go to a worker, so a file's
# module fixtures (trained tiny models, phantom sets, the Ray cluster) are built once
TEST_WORKERS ?= 2

.PHONY: demo test venv bench clean

$(BIN)/oncosynth: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip wheel
	# pyradiomics 3.0.1 (needed by frd-score) must build against the venv's numpy.
	$(BIN)/pip install numpy versioneer wheel
	$(BIN)/pip install --no-build-isolation pyradiomics==3.0.1
	$(BIN)/pip install -e ".[test,frd]"
	touch $(BIN)/oncosynth

venv: $(BIN)/oncosynth

demo: venv
	$(BIN)/oncosynth demo

# --durations: the slowest tests in every CI log (the suite aims at 5 minutes on 2 cores)
test: venv
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile --durations=15

bench: venv
	$(BIN)/python bench/bench_cache.py

clean:
	rm -rf $(VENV) oncosynth-demo .pytest_cache
