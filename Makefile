# One command each: `make train` trains a sparse LeNet-5 on MNIST, `make test` runs the tests.
# Both create .venv and install what they need on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
CONFIG ?= train/configs/lenet5_mnist_xrda.py
WORKDIR ?= runs/$(basename $(notdir $(CONFIG)))
MUTANTS ?= 40

.PHONY: install train test bench mutate clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[train,test]'
	touch $(STAMP)

train: $(STAMP)
	$(PY) -m train.main --config=$(CONFIG) --workdir=$(WORKDIR)

test: $(STAMP)
	$(PY) -m pytest -q -n 2 --dist loadfile

# Mutation testing (cosmic-ray): every mutant of sparse_optax/, a sample of train/'s logic.
# Hours on 2 cores; writes mutation/results/*.json (see the README's Tests section).
mutate: $(STAMP)
	$(PY) -m pip install -q -e '.[mutate]'
	$(PY) -m mutation.run --package sparse_optax
	$(PY) -m mutation.run --package train --sample $(MUTANTS)

bench: $(STAMP)
	$(PY) -m benchmarks.optimizer_update

clean:
	rm -rf $(VENV) runs
