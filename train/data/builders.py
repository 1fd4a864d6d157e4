"""TFDS builders that read a dataset's local raw files instead of downloading them.

TFDS's own builders cannot be pointed at local files: they check download
checksums, and local copies are often re-compressed (re-gzipped IDX files,
re-encoded JPEGs). So each dataset has a small subclass of the canonical TFDS
builder that keeps its name, version and features and only replaces where the
examples come from (TFDS's ``manual_dir`` mechanism). What they write is read
back by the canonical builder, as if TFDS had downloaded it.
"""

from __future__ import annotations

from pathlib import Path

from absl import logging
from tensorflow_datasets.image_classification import cifar as tfds_cifar
from tensorflow_datasets.image_classification import mnist as tfds_mnist

from train.data import raw, text

# Canonical split sizes; other sizes are accepted (tests use tiny files) but warned about.
CANONICAL_SIZES = {
    "mnist": {"train": 60000, "test": 10000},
    "fashion_mnist": {"train": 60000, "test": 10000},
    "cifar10": {"train": 50000, "test": 10000},
}


def _warn_size(dataset: str, split: str, count: int) -> None:
  expected = CANONICAL_SIZES[dataset][split]
  if count != expected:
    logging.warning(
        "%s %s: %d examples, the canonical dataset has %d", dataset, split, count, expected
    )


class _LocalFiles:
  """What the local builders change in TFDS's: examples come from manual_dir."""

  MANUAL_DOWNLOAD_INSTRUCTIONS = "Pass the folder of raw files as DownloadConfig(manual_dir=...)."
  # Nothing is downloaded, so no checksums to look up (for a builder outside tensorflow_datasets
  # the lookup imports importlib_resources, which etils>=1.15 no longer installs).
  url_infos = None
  CANONICAL_MODULE = ""

  def __init__(self, **kwargs):
    # Recorded in dataset_info.json: name the canonical builder's module, as a
    # TFDS download would (TFDS's ReadOnlyBuilder does the same).
    self.__module__ = self.CANONICAL_MODULE
    super().__init__(**kwargs)


class _IdxExamples(_LocalFiles):
  """Examples of an MNIST-like builder read from the IDX files in manual_dir."""

  CANONICAL_MODULE = tfds_mnist.__name__

  def _split_generators(self, dl_manager):
    source = Path(dl_manager.manual_dir)
    return {split: self._generate_examples(source, split) for split in ("train", "test")}

  def _generate_examples(self, source, split):
    images, labels = raw.load_idx_split(source, split)
    _warn_size(self.name, split, len(labels))
    # Index keys, as TFDS's own builder: the keys decide the stored record order.
    for index, (image, label) in enumerate(zip(images, labels)):
      yield index, {"image": raw.encode_png(image), "label": int(label)}


class LocalMnist(_IdxExamples, tfds_mnist.MNIST, skip_registration=True):
  name = "mnist"


class LocalFashionMnist(_IdxExamples, tfds_mnist.FashionMNIST, skip_registration=True):
  name = "fashion_mnist"


class LocalCifar10(_LocalFiles, tfds_cifar.Cifar10, skip_registration=True):
  name = "cifar10"
  CANONICAL_MODULE = tfds_cifar.__name__

  def _split_generators(self, dl_manager):
    source = raw.Cifar10Source.find(Path(dl_manager.manual_dir))
    if source is None:
      raise FileNotFoundError(f"no CIFAR-10 raw data in {dl_manager.manual_dir}")
    self.info.features["label"].names = list(raw.CIFAR10_LABELS)
    return {split: self._generate_examples(source, split) for split in ("train", "test")}

  def _generate_examples(self, source, split):
    count = 0
    for count, (image, label) in enumerate(source.examples(split), start=1):
      index = count - 1
      example = {"id": f"{split}_{index:05d}", "image": raw.encode_png(image), "label": int(label)}
      yield index, example
    _warn_size(self.name, split, count)


# One builder per name in train.data.SUPPORTED.
BUILDERS = {"mnist": LocalMnist, "fashion_mnist": LocalFashionMnist, "cifar10": LocalCifar10,
            "shakespeare": text.Shakespeare}
