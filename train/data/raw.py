"""Raw dataset formats: reading the files TFDS would download, writing the PNGs it stores.

* MNIST-like (``mnist``, ``fashion_mnist``): the four IDX files
  ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
  ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``, gzipped (``.gz``) or not.
* CIFAR-10: a zip (or folder) of JPEGs ``train/<class>/*.jpg`` and
  ``test/<class>/*.jpg``; or the official python batches
  (``cifar-10-python.tar.gz`` or the ``cifar-10-batches-py`` folder); or the
  official binary batches (``cifar-10-binary.tar.gz`` or ``cifar-10-batches-bin``).
"""

from __future__ import annotations

import gzip
import io
import os
import pickle
import struct
import tarfile
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np

# Label order of TFDS's cifar10 (that of the official batches.meta.txt).
CIFAR10_LABELS = (
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
)

_IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_CIFAR_BATCHES = {
    "train": tuple(f"data_batch_{i}" for i in range(1, 6)),
    "test": ("test_batch",),
}


# --------------------------------------------------------------------------- MNIST-like IDX


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


def load_idx_split(directory: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
  """A split's images [N, 28, 28, 1] and labels [N] from the IDX files in `directory`."""
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


def is_idx_dir(directory: Path) -> bool:
  """Whether `directory` holds all four IDX files."""
  return all(_find_file(directory, stem) for pair in _IDX_FILES.values() for stem in pair)


# --------------------------------------------------------------------------- CIFAR-10


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


class Cifar10Source:
  """A located CIFAR-10 source: JPEG zip/folder, or official batches (folder/tar.gz)."""

  def __init__(self, kind: str, path: Path):
    self.kind, self.path = kind, path

  @classmethod
  def find(cls, directory: Path) -> "Cifar10Source | None":
    """The CIFAR-10 source that `directory` is or holds, if any."""
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
    batch_folders = (directory / "cifar-10-batches-py", directory / "cifar-10-batches-bin")
    for folder in (directory, *batch_folders):
      if (folder / "test_batch").is_file() or (folder / "test_batch.bin").is_file():
        return cls("batches_dir", folder)
    for archive in ("cifar-10-python.tar.gz", "cifar-10-binary.tar.gz"):
      if (directory / archive).is_file():
        return cls("batches_tar", directory / archive)
    return None

  def examples(self, split: str) -> Iterator[tuple[np.ndarray, int]]:
    """Yields a split's (image [32, 32, 3], label), in the source's order."""
    if self.kind == "jpeg_zip":
      with zipfile.ZipFile(self.path) as archive:
        yield from _jpeg_tree(dict.fromkeys(archive.namelist()), split, archive.read)
    elif self.kind == "jpeg_dir":
      files = dict.fromkeys(
          p.relative_to(self.path).as_posix() for p in self.path.rglob("*") if p.is_file()
      )
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


# --------------------------------------------------------------------------- PNG


def encode_png(image: np.ndarray) -> bytes:
  """Lossless PNG bytes of a uint8 [H, W, 1|3] image, as TFDS stores images.

  A minimal writer (8-bit greyscale/RGB, no filtering, zlib level 6): the
  per-image cost of PIL or of TFDS's own TF encoder dominates preparation time.
  Neither can replace it without changing the stored bytes: both choose
  filters adaptively, and neither lets the caller turn that off.
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
