# Two entry points: `make demo` and `make test`. Both build .venv first.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin

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

test: venv
	$(BIN)/python -m pytest -q

bench: venv
	$(BIN)/python bench/bench_cache.py

clean:
	rm -rf $(VENV) oncosynth-demo .pytest_cache
