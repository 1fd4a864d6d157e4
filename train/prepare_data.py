"""Offline preparation of TFDS datasets from local raw files.

TFDS normally downloads MNIST, Fashion-MNIST and CIFAR-10 itself. On a machine
without internet, this module builds the same datasets from local copies of the
raw files, under TFDS's canonical name and version (``mnist/3.0.1``,
``fashion_mnist/3.0.1``, ``cifar10/3.0.2``), with the canonical features and
train/test splits. Afterwards the ordinary call works offline::

    tfds.load("mnist", data_dir=DATA_DIR, download=False)

Command line::

    python -m train.prepare_data --dataset mnist --source /path/to/raw --data_dir DIR

Accepted raw layouts (``--source`` is the folder holding them, or a parent folder
with a ``mnist`` / ``fashion_mnist`` / ``fashion-mnist`` / ``cifar10`` subfolder):

* ``mnist``, ``fashion_mnist``: the four IDX files ``train-images-idx3-ubyte``,
  ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``,
  ``t10k-labels-idx1-ubyte``, gzipped (``.gz``) or not.
* ``cifar10``: a zip (or folder) of JPEGs ``train/<class>/*.jpg`` and
  ``test/<class>/*.jpg``; or the official python batches
  (``cifar-10-python.tar.gz`` or the ``cifar-10-batches-py`` folder); or the
  official binary batches (``cifar-10-binary.tar.gz`` or ``cifar-10-batches-bin``).

TFDS's own builders cannot be pointed at these files: they check download
checksums, and local copies are often re-compressed (re-gzipped IDX files,
re-encoded JPEGs). So each dataset has a small subclass of the canonical TFDS
builder that keeps its name, version and features and only replaces where the
examples come from (TFDS's ``manual_dir`` mechanism).

Without ``--data_dir`` data goes to TFDS's default (``$TFDS_DATA_DIR``, else
``~/tensorflow_datasets``).
"""

from __future__ import annotations

import argparse
import gzip
import io
import os
import pickle
import shutil
import struct
import sys
import tarfile
import zipfile
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds
from absl import logging
from tensorflow_datasets.image_classification import cifar as tfds_cifar
from tensorflow_datasets.image_classification import mnist as tfds_mnist

from train import locks

SUPPORTED = ("mnist", "fashion_mnist", "cifar10")

# Canonical split sizes; other sizes are accepted (tests use tiny files) but warned about.
CANONICAL_SIZES = {
    "mnist": {"train": 60000, "test": 10000},
    "fashion_mnist": {"train": 60000, "test": 10000},
    "cifar10": {"train": 50000, "test": 10000},
}

# Label order of TFDS's cifar10 (that of the official batches.meta.txt).
CIFAR10_LABELS = (
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
)

# Names of a dataset's folder inside a raw-data root such as ../shared/data.
_SUBDIRS = {
    "mnist": ("mnist",),
    "fashion_mnist": ("fashion_mnist", "fashion-mnist"),
    "cifar10": ("cifar10", "cifar-10"),
}

# Where OS packages put raw data (Debian's dataset-fashion-mnist).
_SYSTEM_SOURCES = {"fashion_mnist": (Path("/usr/share/datasets/fashion-mnist"),)}

RAW_DATA_ENV = "SPARSE_OPTAX_RAW_DATA"
# `../shared/data` beside the repository: present on the project's offline machines only.
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

_IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_CIFAR_BATCHES = {
    "train": tuple(f"data_batch_{i}" for i in range(1, 6)),
    "test": ("test_batch",),
}


# --------------------------------------------------------------------------- raw readers


def read_idx(path: str | os.PathLike) -> np.ndarray:
  """Reads an IDX file of unsigned bytes (gzipped or not) into a uint8 array."""
  path = Path(path)
  opener = gzip.open if path.suffix == ".gz" else open
  with opener(path, "rb") as f:
    data = f.read()
  if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
    raise ValueError(f"{path}: not an IDX file of unsigned bytes")
  ndim = data[3]
  dims = tuple(int(d) for d in np.frombuffer(data, ">u4", count=ndim, offset=4))
  offset = 4 + 4 * ndim
  if len(data) - offset != int(np.prod(dims)):
    raise ValueError(f"{path}: {len(data) - offset} bytes of data for shape {dims}")
  return np.frombuffer(data, np.uint8, offset=offset).reshape(dims)


def _find_file(directory: Path, stem: str) -> Path | None:
  for name in (stem + ".gz", stem):
    if (directory / name).is_file():
      return directory / name
  return None


def _load_idx_split(directory: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
  image_stem, label_stem = _IDX_FILES[split]
  images = read_idx(_find_file(directory, image_stem))
  labels = read_idx(_find_file(directory, label_stem))
  if images.ndim != 3 or images.shape[1:] != (28, 28):
    raise ValueError(f"{directory}: {split} images have shape {images.shape}, want [N, 28, 28]")
  if labels.shape != images.shape[:1]:
    raise ValueError(f"{directory}: {len(images)} {split} images but {labels.shape} labels")
  if labels.size and labels.max() > 9:
    raise ValueError(f"{directory}: {split} label {labels.max()} out of range 0..9")
  return images[..., None], labels


def _is_idx_dir(directory: Path) -> bool:
  return all(_find_file(directory, stem) for pair in _IDX_FILES.values() for stem in pair)


def _decode_jpeg(data: bytes) -> np.ndarray:
  # PIL (libjpeg's accurate integer IDCT) when present: faster and closer to
  # the original pixels than tf.io.decode_jpeg's default fast IDCT.
  try:
    from PIL import Image
  except ImportError:
    import tensorflow as tf

    return tf.io.decode_jpeg(data, channels=3).numpy()
  with Image.open(io.BytesIO(data)) as image:
    return np.asarray(image.convert("RGB"))


def _jpeg_tree(files: dict[str, object], split: str, read) -> Iterator[tuple[np.ndarray, int]]:
  """Yields (image, label) from `split/<class>/*.jpg` entries, by class then name."""
  entries = []
  for name in files:
    parts = name.strip("/").split("/")
    if len(parts) >= 3 and parts[-3] == split and parts[-1].lower().endswith((".jpg", ".jpeg")):
      if parts[-2] not in CIFAR10_LABELS:
        raise ValueError(f"unknown CIFAR-10 class folder {parts[-2]!r} in {name}")
      entries.append((CIFAR10_LABELS.index(parts[-2]), parts[-1], name))
  for label, _, name in sorted(entries):
    image = _decode_jpeg(read(name))
    if image.shape != (32, 32, 3):
      raise ValueError(f"{name}: image of shape {image.shape}, want (32, 32, 3)")
    yield image, label


def _cifar_batch(data: bytes, name: str) -> tuple[np.ndarray, np.ndarray]:
  """Decodes one official CIFAR-10 batch (python pickle or binary records)."""
  if name.endswith(".bin"):
    records = np.frombuffer(data, np.uint8).reshape(-1, 3073)
    labels, pixels = records[:, 0], records[:, 1:]
  else:
    batch = pickle.loads(data, encoding="bytes")
    labels, pixels = np.asarray(batch[b"labels"], np.uint8), np.asarray(batch[b"data"], np.uint8)
  return pixels.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels


class _Cifar10Source:
  """A located CIFAR-10 source: JPEG zip/folder, or official batches (folder/tar.gz)."""

  def __init__(self, kind: str, path: Path):
    self.kind, self.path = kind, path

  @classmethod
  def find(cls, directory: Path) -> "_Cifar10Source | None":
    if directory.is_file():
      if zipfile.is_zipfile(directory):
        return cls("jpeg_zip", directory)
      if directory.name.endswith((".tar.gz", ".tgz", ".tar")):
        return cls("batches_tar", directory)
      return None
    if not directory.is_dir():
      return None
    for zip_name in ("cifar10-jpeg.zip", "cifar10.zip"):
      if (directory / zip_name).is_file():
        return cls("jpeg_zip", directory / zip_name)
    if (directory / "train").is_dir() and (directory / "test").is_dir():
      return cls("jpeg_dir", directory)
    for folder in (directory, directory / "cifar-10-batches-py", directory / "cifar-10-batches-bin"):
      if (folder / "test_batch").is_file() or (folder / "test_batch.bin").is_file():
        return cls("batches_dir", folder)
    for archive in ("cifar-10-python.tar.gz", "cifar-10-binary.tar.gz"):
      if (directory / archive).is_file():
        return cls("batches_tar", directory / archive)
    return None

  def examples(self, split: str) -> Iterator[tuple[np.ndarray, int]]:
    if self.kind == "jpeg_zip":
      with zipfile.ZipFile(self.path) as archive:
        yield from _jpeg_tree(dict.fromkeys(archive.namelist()), split, archive.read)
    elif self.kind == "jpeg_dir":
      files = dict.fromkeys(p.relative_to(self.path).as_posix() for p in self.path.rglob("*") if p.is_file())
      yield from _jpeg_tree(files, split, lambda name: (self.path / name).read_bytes())
    else:
      yield from self._batch_examples(split)

  def _batch_examples(self, split: str) -> Iterator[tuple[np.ndarray, int]]:
    if self.kind == "batches_dir":
      def read(stem):
        for name in (stem, stem + ".bin"):
          if (self.path / name).is_file():
            return (self.path / name).read_bytes(), name
        raise FileNotFoundError(f"{self.path}: no CIFAR-10 batch {stem}")
      for stem in _CIFAR_BATCHES[split]:
        images, labels = _cifar_batch(*read(stem))
        yield from zip(images, labels.astype(int))
      return
    with tarfile.open(self.path) as archive:
      members = {Path(m.name).name: m for m in archive.getmembers() if m.isfile()}
      for stem in _CIFAR_BATCHES[split]:
        name = stem if stem in members else stem + ".bin"
        if name not in members:
          raise FileNotFoundError(f"{self.path}: no CIFAR-10 batch {stem}")
        images, labels = _cifar_batch(archive.extractfile(members[name]).read(), name)
        yield from zip(images, labels.astype(int))


def _encode_png(image: np.ndarray) -> bytes:
  """Lossless PNG bytes of a uint8 [H, W, 1|3] image, as TFDS stores images.

  A minimal writer (8-bit greyscale/RGB, no filtering, zlib level 6): the
  per-image cost of PIL or of TFDS's own TF encoder dominates preparation time.
  """
  height, width, channels = image.shape
  rows = np.zeros((height, width * channels + 1), np.uint8)  # column 0: filter type 0
  rows[:, 1:] = image.reshape(height, width * channels)

  def chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

  colour_type = {1: 0, 3: 2}[channels]
  header = struct.pack(">IIBBBBB", width, height, 8, colour_type, 0, 0, 0)
  return (
      b"\x89PNG\r\n\x1a\n"
      + chunk(b"IHDR", header)
      + chunk(b"IDAT", zlib.compress(rows.tobytes(), 6))
      + chunk(b"IEND", b"")
  )


def _warn_size(dataset: str, split: str, count: int) -> None:
  expected = CANONICAL_SIZES[dataset][split]
  if count != expected:
    logging.warning("%s %s: %d examples, the canonical dataset has %d", dataset, split, count, expected)


# --------------------------------------------------------------------------- builders

class _LocalFiles:
  """What the local builders change in TFDS's: examples come from manual_dir."""

  MANUAL_DOWNLOAD_INSTRUCTIONS = "Pass the folder of raw files as DownloadConfig(manual_dir=...)."
  # Nothing is downloaded, so no checksums to look up (for a builder outside
  # tensorflow_datasets the lookup imports importlib_resources, which etils>=1.15 no longer installs).
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
    images, labels = _load_idx_split(source, split)
    _warn_size(self.name, split, len(labels))
    # Index keys, as TFDS's own builder: the keys decide the stored record order.
    for index, (image, label) in enumerate(zip(images, labels)):
      yield index, {"image": _encode_png(image), "label": int(label)}


class _LocalMnist(_IdxExamples, tfds_mnist.MNIST, skip_registration=True):
  name = "mnist"


class _LocalFashionMnist(_IdxExamples, tfds_mnist.FashionMNIST, skip_registration=True):
  name = "fashion_mnist"


class _LocalCifar10(_LocalFiles, tfds_cifar.Cifar10, skip_registration=True):
  name = "cifar10"
  CANONICAL_MODULE = tfds_cifar.__name__

  def _split_generators(self, dl_manager):
    source = _Cifar10Source.find(Path(dl_manager.manual_dir))
    if source is None:
      raise FileNotFoundError(f"no CIFAR-10 raw data in {dl_manager.manual_dir}")
    self.info.features["label"].names = list(CIFAR10_LABELS)
    return {split: self._generate_examples(source, split) for split in ("train", "test")}

  def _generate_examples(self, source, split):
    count = 0
    for count, (image, label) in enumerate(source.examples(split), start=1):
      index = count - 1
      yield index, {"id": f"{split}_{index:05d}", "image": _encode_png(image), "label": int(label)}
    _warn_size(self.name, split, count)


_BUILDERS = {"mnist": _LocalMnist, "fashion_mnist": _LocalFashionMnist, "cifar10": _LocalCifar10}


# --------------------------------------------------------------------------- public API


def _check_name(dataset: str) -> None:
  if dataset not in SUPPORTED:
    raise ValueError(f"cannot prepare {dataset!r} from local files; supported: {', '.join(SUPPORTED)}")


def _source_ok(dataset: str, directory: Path) -> bool:
  if dataset == "cifar10":
    return _Cifar10Source.find(directory) is not None
  return directory.is_dir() and _is_idx_dir(directory)


def resolve_source(dataset: str, source: str | os.PathLike) -> Path | None:
  """The folder (or archive) holding `dataset`'s raw files: `source` or a known subfolder."""
  _check_name(dataset)
  source = Path(source).expanduser()
  for candidate in (source, *(source / sub for sub in _SUBDIRS[dataset])):
    if _source_ok(dataset, candidate):
      return candidate
  return None


def find_local_source(dataset: str) -> Path | None:
  """A local raw copy of `dataset`, if any: $SPARSE_OPTAX_RAW_DATA, ../shared/data, OS packages."""
  if dataset not in SUPPORTED:
    return None
  roots = []
  if os.environ.get(RAW_DATA_ENV):
    roots.append(Path(os.environ[RAW_DATA_ENV]))
  roots.append(SHARED_DATA)
  roots.extend(_SYSTEM_SOURCES.get(dataset, ()))
  for root in roots:
    found = resolve_source(dataset, root)
    if found is not None:
      return found
  return None


def is_prepared(dataset: str, data_dir: str | os.PathLike | None = None) -> bool:
  """Whether TFDS finds `dataset` (canonical version) prepared under `data_dir`."""
  return tfds.builder(dataset, data_dir=None if data_dir is None else os.fspath(data_dir)).is_prepared()


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
  _check_name(dataset)
  found = resolve_source(dataset, source)
  if found is None:
    raise FileNotFoundError(f"no {dataset} raw files in {source} (see `python -m train.prepare_data --help`)")
  data_dir = None if data_dir is None else os.fspath(data_dir)
  builder = _BUILDERS[dataset](data_dir=data_dir)
  # Trainings started together (a sweep's workers, a host's processes) would otherwise build it
  # at once, and all but one fail on renaming TFDS's incomplete folder.
  with locks.exclusive(preparation_lock(builder)):
    builder = _BUILDERS[dataset](data_dir=data_dir)  # another process may have built it meanwhile
    if builder.is_prepared():
      if not force:
        logging.info("%s already prepared in %s", dataset, builder.data_dir)
        return Path(builder.data_dir)
      shutil.rmtree(builder.data_dir)
      builder = _BUILDERS[dataset](data_dir=data_dir)
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=os.fspath(found)))
  return Path(builder.data_dir)


def preparation_lock(builder) -> Path:
  """The lock held while a TFDS builder's dataset is built, in its data dir."""
  return Path(builder.data_dir).parent.parent / f".{builder.name}.prepare.lock"


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
  source = find_local_source(dataset)
  if source is None:
    return False
  logging.info("preparing %s from local files in %s", dataset, source)
  prepare(dataset, source, data_dir)
  return is_prepared(dataset, data_dir)


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(
      prog="python -m train.prepare_data",
      description="Prepare a TFDS dataset from local raw files, for offline tfds.load(..., download=False).",
  )
  parser.add_argument("--dataset", required=True, choices=SUPPORTED)
  parser.add_argument(
      "--source",
      help="folder (or CIFAR-10 archive) with the raw files, or a parent of a <dataset> folder; "
      f"default: ${RAW_DATA_ENV}, ../shared/data beside the repository, or OS package folders",
  )
  parser.add_argument("--data_dir", help="TFDS data dir (default: $TFDS_DATA_DIR or ~/tensorflow_datasets)")
  parser.add_argument("--force", action="store_true", help="rebuild even if already prepared")
  args = parser.parse_args(argv)
  source = args.source or find_local_source(args.dataset)
  if source is None:
    parser.error(f"no local raw files found for {args.dataset}; pass --source")
  path = prepare(args.dataset, source, args.data_dir, force=args.force)
  builder = tfds.builder(args.dataset, data_dir=args.data_dir)
  sizes = ", ".join(f"{name} {info.num_examples}" for name, info in sorted(builder.info.splits.items()))
  print(f"{args.dataset}: {sizes} examples in {path}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
