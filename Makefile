# One command each: `make train` trains a sparse LeNet-5 on MNIST, `make test` runs the tests.
# Both create .venv and install what they need on first use; so do `make docs` (the docs site,
# docs/_build/html) and `make lint` (ruff).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DOCS_STAMP := $(VENV)/.installed-docs
DEV_STAMP := $(VENV)/.installed-dev
CONFIG ?= train/configs/lenet5_mnist_xrda_sparsity.py
WORKDIR ?= runs/$(basename $(notdir $(CONFIG)))
MUTANTS ?= 40

.PHONY: install train test test-lowest docs lint bench mutate clean

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

# The docs, offline: warnings are errors, and so is a cross-reference that does not resolve
# (-n). Optax, JAX, Flax, NumPy and Python resolve from docs/_inventories/, kept in the
# repository; the notebooks are rendered as committed, not run.
$(DOCS_STAMP): $(STAMP) pyproject.toml
	$(PY) -m pip install -q -e '.[docs]'
	touch $(DOCS_STAMP)

docs: $(DOCS_STAMP)
	$(PY) -m sphinx -W --keep-going -n -q -b html docs docs/_build/html

$(DEV_STAMP): $(STAMP) pyproject.toml
	$(PY) -m pip install -q -e '.[dev]'
	touch $(DEV_STAMP)

lint: $(DEV_STAMP)
	$(VENV)/bin/ruff check .

# The library's tests against the lowest versions pyproject.toml allows (CI runs it too).
LOWEST := .venv-lowest
LIBRARY_TESTS := sparse_optax tests/test_math.py tests/test_optimizers_common.py \
  tests/test_optax_compat.py tests/test_errors.py tests/test_edge_cases.py tests/test_layouts.py \
  tests/test_compact.py tests/test_baselines.py tests/test_compressed_sensing.py \
  tests/test_metrics_and_masking.py tests/test_dynamic_sparse.py tests/test_target.py \
  tests/test_nm.py tests/test_groups.py
test-lowest:
	test -x $(LOWEST)/bin/python || $(PYTHON) -m venv $(LOWEST)
	$(LOWEST)/bin/python -m pip install -q $$($(PYTHON) .ci/lowest_requirements.py) pytest pytest-xdist
	$(LOWEST)/bin/python -m pip list 2>/dev/null | grep -E '^(jax|jaxlib|optax|chex|numpy) '
	$(LOWEST)/bin/python -m pytest -q -n 2 --dist loadfile $(LIBRARY_TESTS)

# Mutation testing (cosmic-ray): every mutant of sparse_optax/, a sample of train/'s logic.
# Hours on 2 cores; writes mutation/results/*.json (see docs/guides/testing.md).
mutate: $(STAMP)
	$(PY) -m pip install -q -e '.[mutate]'
	$(PY) -m mutation.run --package sparse_optax
	$(PY) -m mutation.run --package train --sample $(MUTANTS)

bench: $(STAMP)
	$(PY) -m benchmarks.optimizer_update

clean:
	rm -rf $(VENV) $(LOWEST) runs docs/_build
