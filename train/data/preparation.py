"""Building a TFDS dataset from its local raw files, once, and only when it is missing.

`maybe_prepare` is what the training loop and the input pipeline call: it builds
the dataset from a local raw copy when one exists and leaves the rest to TFDS's
download. `prepare` builds from a given source; without a data dir, data goes to
TFDS's default (``$TFDS_DATA_DIR``, else ``~/tensorflow_datasets``).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import tensorflow_datasets as tfds
from absl import logging

from train import locks
from train.data import SUPPORTED, builders, sources


def is_prepared(dataset: str, data_dir: str | os.PathLike | None = None) -> bool:
  """Whether TFDS finds `dataset` (canonical version) prepared under `data_dir`."""
  data_dir = None if data_dir is None else os.fspath(data_dir)
  return tfds.builder(dataset, data_dir=data_dir).is_prepared()


def preparation_lock(builder) -> Path:
  """The lock held while a TFDS builder's dataset is built, in its data dir."""
  return Path(builder.data_dir).parent.parent / f".{builder.name}.prepare.lock"


def prepare(
    dataset: str,
    source: str | os.PathLike,
    data_dir: str | os.PathLike | None = None,
    *,
    force: bool = False,
) -> Path:
  """Builds TFDS `dataset` under `data_dir` from the raw files in `source`.

  Skips the work if the dataset is already there (unless `force`). Returns the
  dataset's version folder, e.g. `DATA_DIR/mnist/3.0.1`.
  """
  found = sources.resolve_source(dataset, source)  # raises for an unsupported dataset
  if found is None:
    raise FileNotFoundError(
        f"no {dataset} raw files in {source} (see `python -m train.prepare_data --help`)"
    )
  data_dir = None if data_dir is None else os.fspath(data_dir)
  builder_class = builders.BUILDERS[dataset]
  builder = builder_class(data_dir=data_dir)
  # Trainings started together (a sweep's workers, a host's processes) would otherwise build it
  # at once, and all but one fail on renaming TFDS's incomplete folder.
  with locks.exclusive(preparation_lock(builder)):
    builder = builder_class(data_dir=data_dir)  # another process may have built it meanwhile
    if builder.is_prepared():
      if not force:
        logging.info("%s already prepared in %s", dataset, builder.data_dir)
        return Path(builder.data_dir)
      shutil.rmtree(builder.data_dir)
      builder = builder_class(data_dir=data_dir)
    config = tfds.download.DownloadConfig(manual_dir=os.fspath(found))
    builder.download_and_prepare(download_config=config)
  return Path(builder.data_dir)


def maybe_prepare(dataset: str, data_dir: str | os.PathLike | None = None) -> bool:
  """Prepares `dataset` from a known local raw copy if it is missing under `data_dir`.

  Does nothing when it is already prepared, when the dataset cannot be built
  from local files, or when no local copy exists (TFDS then downloads it as
  usual). Returns whether the dataset is prepared afterwards.
  """
  if dataset not in SUPPORTED:
    return is_prepared(dataset, data_dir)
  if is_prepared(dataset, data_dir):
    return True
  source = sources.find_local_source(dataset)
  if source is None:
    return False
  logging.info("preparing %s from local files in %s", dataset, source)
  prepare(dataset, source, data_dir)
  return is_prepared(dataset, data_dir)
