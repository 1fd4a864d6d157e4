# One command each: `make train` trains a sparse LeNet-5 on MNIST, `make test` runs the tests.
# Both create .venv and install what they need on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
CONFIG ?= train/configs/lenet5_mnist_xrda.py
WORKDIR ?= runs/$(basename $(notdir $(CONFIG)))

.PHONY: install train test bench clean

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

bench: $(STAMP)
	$(PY) -m benchmarks.optimizer_update

clean:
	rm -rf $(VENV) runs
