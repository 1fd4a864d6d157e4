# One command each: `make train` trains a sparse LeNet-5 on MNIST, `make test` runs the tests.
# Both create .venv and install what they need on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
CONFIG ?= train/configs/lenet5_mnist_xrda_sparsity.py
WORKDIR ?= runs/$(basename $(notdir $(CONFIG)))
MUTANTS ?= 40

.PHONY: install train test test-lowest bench mutate clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[train,test,sweeps]'
	touch $(STAMP)

train: $(STAMP)
	$(PY) -m train.main --config=$(CONFIG) --workdir=$(WORKDIR)

test: $(STAMP)
	$(PY) -m pytest -q -n 2 --dist loadfile

# The library's tests against the lowest versions pyproject.toml allows (CI runs it too).
LOWEST := .venv-lowest
LIBRARY_TESTS := sparse_optax tests/test_math.py tests/test_optimizers_common.py \
  tests/test_optax_compat.py tests/test_errors.py tests/test_edge_cases.py tests/test_layouts.py \
  tests/test_compact.py tests/test_baselines.py tests/test_compressed_sensing.py \
  tests/test_metrics_and_masking.py tests/test_dynamic_sparse.py
test-lowest:
	test -x $(LOWEST)/bin/python || $(PYTHON) -m venv $(LOWEST)
	$(LOWEST)/bin/python -m pip install -q $$($(PYTHON) .ci/lowest_requirements.py) pytest pytest-xdist
	$(LOWEST)/bin/python -m pip list 2>/dev/null | grep -E '^(jax|jaxlib|optax|chex|numpy) '
	$(LOWEST)/bin/python -m pytest -q -n 2 --dist loadfile $(LIBRARY_TESTS)

# Mutation testing (cosmic-ray): every mutant of sparse_optax/, a sample of train/'s logic.
# Hours on 2 cores; writes mutation/results/*.json (see the README's Tests section).
mutate: $(STAMP)
	$(PY) -m pip install -q -e '.[mutate]'
	$(PY) -m mutation.run --package sparse_optax
	$(PY) -m mutation.run --package train --sample $(MUTANTS)

bench: $(STAMP)
	$(PY) -m benchmarks.optimizer_update

clean:
	rm -rf $(VENV) $(LOWEST) runs
