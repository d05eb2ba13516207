# shapelens: the two set-up commands of the README are `make demo` and `make test`.
# TORCH is the torch requirement installed first (a CPU wheel of 2.13.0 by default);
# users with a GPU override it, e.g. `make demo TORCH="torch==2.13.0 --index-url <your CUDA index>"`.
PYTHON ?= python3
VENV   ?= .venv
TORCH  ?= torch==2.13.0
BIN     = $(VENV)/bin

.PHONY: install demo test-deps test bench validate clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip

# torch goes in first and pinned, so no later requirement can pull a CUDA build of it
install: $(BIN)/python
	$(BIN)/pip install $(TORCH)
	$(BIN)/pip install -e .

demo: install
	$(BIN)/shapelens atlas --demo

test-deps: install
	$(BIN)/pip install -e ".[test]"
	@command -v chromium >/dev/null 2>&1 || { echo "installing Debian chromium for the atlas browser test"; \
	  (apt-get update -qq && apt-get install -y -qq chromium) || sudo sh -c 'apt-get update -qq && apt-get install -y -qq chromium'; }

test: test-deps
	$(BIN)/python -m pytest

bench: install
	$(BIN)/pip install -e ".[bench]"
	$(BIN)/python benchmarks/bench_dimension.py
	$(BIN)/python benchmarks/bench_memory.py

validate: install
	$(BIN)/pip install -e ".[test]"
	$(BIN)/python validation/mnist_dimension.py
	$(BIN)/python validation/mnist_lid.py

clean:
	rm -rf $(VENV) atlas .pytest_cache
