"""Tests of train/data/ and its command line train/prepare_data.py: TFDS datasets built offline
from local raw files."""

from __future__ import annotations

import gzip
import io
import os
import pickle
import struct
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from PIL import Image

from train import input_pipeline, prepare_data
from train.data import preparation, sources
from train.data.raw import CIFAR10_LABELS, encode_png, read_idx

IDX_NAMES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


@pytest.fixture(autouse=True)
def _fresh_cache():
  input_pipeline.clear_cache()
  yield
  input_pipeline.clear_cache()


def _write_idx(path: Path, array: np.ndarray, compress: bool) -> None:
  header = (struct.pack(">BBBB", 0, 0, 0x08, array.ndim)
            + struct.pack(f">{array.ndim}I", *array.shape))
  data = header + array.astype(np.uint8).tobytes()
  if compress:
    with gzip.open(path.with_name(path.name + ".gz"), "wb") as f:
      f.write(data)
  else:
    path.write_bytes(data)


def _write_mnist_like(directory: Path, sizes=None, compress=True, seed=0) -> dict:
  """Writes random IDX files; returns {split: (images [N,28,28], labels [N])}."""
  sizes = sizes or {"train": 30, "test": 20}
  rng = np.random.default_rng(seed)
  directory.mkdir(parents=True, exist_ok=True)
  data = {}
  for split, n in sizes.items():
    images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, n, dtype=np.uint8)
    _write_idx(directory / IDX_NAMES[split][0], images, compress)
    _write_idx(directory / IDX_NAMES[split][1], labels, compress)
    data[split] = (images, labels)
  return data


def _loaded(name, data_dir, split):
  """{image bytes: label} of a split, through the public tfds.load."""
  ds = tfds.load(name, split=split, data_dir=str(data_dir), download=False)
  return {ex["image"].tobytes(): int(ex["label"]) for ex in tfds.as_numpy(ds)}


def test_png_writer_is_lossless():
  rng = np.random.default_rng(1)
  for shape in [(28, 28, 1), (32, 32, 3)]:
    image = rng.integers(0, 256, shape, dtype=np.uint8)
    np.testing.assert_array_equal(tf.io.decode_png(encode_png(image)).numpy(), image)


def test_mnist_from_idx_loads_offline_with_canonical_features(tmp_path):
  raw = _write_mnist_like(tmp_path / "raw" / "mnist")
  data_dir = tmp_path / "tfds"
  # A parent folder with a `mnist` subfolder is accepted, as ../shared/data is.
  path = preparation.prepare("mnist", tmp_path / "raw", data_dir)
  assert path == data_dir / "mnist" / "3.0.1"

  builder = tfds.builder("mnist", data_dir=str(data_dir))
  assert type(builder) is tfds.image_classification.MNIST  # the canonical builder reads it
  assert builder.is_prepared() and str(builder.version) == "3.0.1"
  assert builder.info.features["image"].shape == (28, 28, 1)
  assert builder.info.features["image"].np_dtype == np.uint8
  assert builder.info.features["label"].num_classes == 10
  assert ({s: builder.info.splits[s].num_examples for s in ("train", "test")}
          == {"train": 30, "test": 20})
  assert builder.info.module_name == "tensorflow_datasets.image_classification.mnist"

  for split, (images, labels) in raw.items():
    expected = {img[..., None].tobytes(): int(lab) for img, lab in zip(images, labels)}
    assert _loaded("mnist", data_dir, split) == expected
  assert len(list(builder.as_dataset(split="train"))) == 30


def test_prepare_is_idempotent_and_force_rebuilds(tmp_path):
  _write_mnist_like(tmp_path / "raw")
  preparation.prepare("mnist", tmp_path / "raw", tmp_path / "tfds")
  info_file = tmp_path / "tfds" / "mnist" / "3.0.1" / "dataset_info.json"
  stamp = info_file.stat().st_mtime_ns
  start = time.perf_counter()
  preparation.prepare("mnist", tmp_path / "raw", tmp_path / "tfds")
  assert info_file.stat().st_mtime_ns == stamp
  assert time.perf_counter() - start < 2.0

  _write_mnist_like(tmp_path / "raw", sizes={"train": 12, "test": 5}, seed=3)
  preparation.prepare("mnist", tmp_path / "raw", tmp_path / "tfds", force=True)
  builder = tfds.builder("mnist", data_dir=str(tmp_path / "tfds"))
  assert builder.info.splits["train"].num_examples == 12


def test_fashion_mnist_from_uncompressed_idx_through_the_command_line(tmp_path, capsys):
  raw = _write_mnist_like(tmp_path / "fashion-mnist", compress=False, seed=2)
  argv = ["--dataset", "fashion_mnist", "--source", str(tmp_path),
          "--data_dir", str(tmp_path / "tfds")]
  assert prepare_data.main(argv) == 0
  assert "train 30" in capsys.readouterr().out
  builder = tfds.builder("fashion_mnist", data_dir=str(tmp_path / "tfds"))
  assert builder.info.features["label"].names[0] == "T-shirt/top"
  images, labels = raw["test"]
  assert _loaded("fashion_mnist", tmp_path / "tfds", "test") == {
      img[..., None].tobytes(): int(lab) for img, lab in zip(images, labels)
  }


def _colour(label: int) -> np.ndarray:
  # Flat, well-separated colours survive JPEG almost exactly.
  return np.array([(label * 25) % 256, 255 - label * 25, (label * 70) % 256], np.uint8)


def test_cifar10_from_a_jpeg_zip(tmp_path):
  per_split = {"train": 2, "test": 1}
  archive = tmp_path / "cifar10" / "cifar10-jpeg.zip"
  archive.parent.mkdir()
  with zipfile.ZipFile(archive, "w") as z:
    for split, n in per_split.items():
      for label, name in enumerate(CIFAR10_LABELS):
        for i in range(n):
          buffer = io.BytesIO()
          Image.fromarray(np.broadcast_to(_colour(label), (32, 32, 3)).copy()).save(
              buffer, format="JPEG", quality=95
          )
          z.writestr(f"{split}/{name}/{i:04d}.jpg", buffer.getvalue())
  data_dir = tmp_path / "tfds"
  preparation.prepare("cifar10", tmp_path, data_dir)

  builder = tfds.builder("cifar10", data_dir=str(data_dir))
  assert type(builder) is tfds.image_classification.Cifar10 and str(builder.version) == "3.0.2"
  assert builder.info.features["label"].names == list(CIFAR10_LABELS)
  assert set(builder.info.features) == {"id", "image", "label"}
  for split, n in per_split.items():
    assert builder.info.splits[split].num_examples == 10 * n
    examples = list(tfds.as_numpy(builder.as_dataset(split=split)))
    assert sorted(int(e["label"]) for e in examples) == sorted(list(range(10)) * n)
    for e in examples:
      assert e["image"].shape == (32, 32, 3)
      assert np.abs(e["image"].astype(int) - _colour(e["label"])).max() <= 3
      assert e["id"].decode().startswith(f"{split}_")


def test_cifar10_from_the_official_python_batches(tmp_path):
  rng = np.random.default_rng(4)
  batches = {}
  for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
    batches[name] = {
        b"data": rng.integers(0, 256, (3, 3072), dtype=np.uint8),
        b"labels": [int(x) for x in rng.integers(0, 10, 3)],
    }
  archive = tmp_path / "cifar-10-python.tar.gz"
  with tarfile.open(archive, "w:gz") as tar:
    for name, batch in batches.items():
      payload = pickle.dumps(batch)
      member = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
      member.size = len(payload)
      tar.addfile(member, io.BytesIO(payload))
  preparation.prepare("cifar10", tmp_path, tmp_path / "tfds")

  def expected(names):
    return {
        row.reshape(3, 32, 32).transpose(1, 2, 0).tobytes(): label
        for n in names
        for row, label in zip(batches[n][b"data"], batches[n][b"labels"])
    }

  assert (_loaded("cifar10", tmp_path / "tfds", "train")
          == expected([f"data_batch_{i}" for i in range(1, 6)]))
  assert _loaded("cifar10", tmp_path / "tfds", "test") == expected(["test_batch"])


def test_bad_sources_are_reported(tmp_path):
  with pytest.raises(FileNotFoundError, match="no mnist raw files"):
    preparation.prepare("mnist", tmp_path, tmp_path / "tfds")
  for stem in [n for pair in IDX_NAMES.values() for n in pair]:
    (tmp_path / stem).write_bytes(b"not an idx file")
  with pytest.raises(ValueError, match="not an IDX file"):
    preparation.prepare("mnist", tmp_path, tmp_path / "tfds")
  with pytest.raises(ValueError, match="supported"):
    preparation.prepare("cifar100", tmp_path, tmp_path / "tfds")


def test_maybe_prepare_uses_known_local_copies_only(tmp_path, monkeypatch):
  monkeypatch.setattr(sources, "SHARED_DATA", tmp_path / "absent")
  monkeypatch.setattr(sources, "_SYSTEM_SOURCES", {})
  monkeypatch.delenv(sources.RAW_DATA_ENV, raising=False)
  data_dir = tmp_path / "tfds"
  assert not preparation.maybe_prepare("mnist", data_dir)  # no copy anywhere: TFDS's business
  assert not preparation.maybe_prepare("cifar100", data_dir)
  assert not (data_dir / "mnist").exists()

  _write_mnist_like(tmp_path / "raw" / "mnist")
  monkeypatch.setenv(sources.RAW_DATA_ENV, str(tmp_path / "raw"))
  assert preparation.maybe_prepare("mnist", data_dir)
  assert preparation.is_prepared("mnist", data_dir)


def test_input_pipeline_reads_a_prepared_dataset(tmp_path, monkeypatch):
  raw = _write_mnist_like(tmp_path / "raw")
  monkeypatch.setattr(sources, "SHARED_DATA", tmp_path / "absent")
  monkeypatch.setenv(sources.RAW_DATA_ENV, str(tmp_path / "raw"))
  monkeypatch.setenv(input_pipeline.DOWNLOAD_ENV, "0")
  data_dir = str(tmp_path / "tfds")
  # The pipeline prepares the missing dataset from the local copy by itself.
  info = input_pipeline.get_info("mnist", data_dir=data_dir, train_split="train[:20]",
                                 eval_split="train[20:]")
  assert (info.num_train, info.num_test, info.image_shape) == (20, 10, (28, 28, 1))

  images, labels = raw["test"]
  batches = list(input_pipeline.create_split("mnist", "test", 8, train=False, data_dir=data_dir))
  assert [len(b["label"]) for b in batches] == [8, 8, 4]
  pixels = np.concatenate([b["image"] for b in batches])[..., 0] * 0.3081 + 0.1307
  pixels = np.round(pixels * 255).astype(np.uint8)
  loaded = np.concatenate([b["label"] for b in batches]).tolist()
  got = sorted(zip((p.tobytes() for p in pixels), loaded))
  assert got == sorted(zip((i.tobytes() for i in images), labels.tolist()))


def _real_mnist_source() -> Path | None:
  env = os.environ.get(sources.RAW_DATA_ENV)
  roots = [Path(env)] if env else []
  roots.append(Path(__file__).resolve().parents[2] / "shared" / "data")
  for root in roots:
    found = sources.resolve_source("mnist", root)
    if found is not None:
      return found
  return None


@pytest.mark.skipif(_real_mnist_source() is None, reason="no local copy of the real MNIST files")
def test_real_mnist(tmp_path):
  preparation.prepare("mnist", _real_mnist_source(), tmp_path)
  builder = tfds.builder("mnist", data_dir=str(tmp_path))
  assert ({s: builder.info.splits[s].num_examples for s in ("train", "test")}
          == {"train": 60000, "test": 10000})
  histograms = {
      "train": [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949],
      "test": [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009],
  }
  for split, expected in histograms.items():
    ds = builder.as_dataset(split=split, decoders={"image": tfds.decode.SkipDecoding()})
    labels = np.concatenate([b for b in tfds.as_numpy(ds.map(lambda ex: ex["label"]).batch(10000))])
    np.testing.assert_array_equal(np.bincount(labels, minlength=10), expected)
  # Every test image is stored pixel for pixel (order aside: TFDS shuffles records).
  stored = tfds.as_numpy(builder.as_dataset(split="test", batch_size=-1))
  raw_images = read_idx(_real_mnist_source() / "t10k-images-idx3-ubyte.gz")
  raw_labels = read_idx(_real_mnist_source() / "t10k-labels-idx1-ubyte.gz")
  as_pairs = lambda images, labels: sorted(zip((i.tobytes() for i in images), labels.tolist()))
  assert as_pairs(stored["image"][..., 0], stored["label"]) == as_pairs(raw_images, raw_labels)


_PREPARE_WHEN_TOLD = """
import sys, time
from pathlib import Path
from train.data import preparation
ready, go = Path(sys.argv[1]), Path(sys.argv[2])
ready.touch()
while not go.exists():
    time.sleep(0.01)
print(preparation.prepare("mnist", sys.argv[3], sys.argv[4]))
"""


def test_processes_preparing_at_once_build_the_dataset_once(tmp_path):
  # A sweep's workers, or a host's processes, start together on a machine without the data.
  _write_mnist_like(tmp_path / "raw", sizes={"train": 300, "test": 100})
  go = tmp_path / "go"
  procs = []
  for i in range(3):
    argv = [str(tmp_path / f"ready{i}"), str(go), str(tmp_path / "raw"), str(tmp_path / "tfds")]
    procs.append(subprocess.Popen([sys.executable, "-c", _PREPARE_WHEN_TOLD, *argv],
                                  cwd=Path(__file__).resolve().parents[1],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
  deadline = time.monotonic() + 120
  while not all((tmp_path / f"ready{i}").exists() for i in range(3)):
    assert time.monotonic() < deadline and all(p.poll() is None for p in procs), [
        p.communicate() for p in procs if p.poll() is not None]
    time.sleep(0.05)
  go.touch()
  outputs = [p.communicate(timeout=120) for p in procs]
  assert [p.returncode for p in procs] == [0, 0, 0], [err[-2000:] for _, err in outputs]
  assert ({out.strip().splitlines()[-1] for out, _ in outputs}
          == {str(tmp_path / "tfds" / "mnist" / "3.0.1")})
  assert sum("Downloading and preparing" in out for out, _ in outputs) == 1  # built by one
  builder = tfds.builder("mnist", data_dir=str(tmp_path / "tfds"))
  assert builder.info.splits["train"].num_examples == 300
