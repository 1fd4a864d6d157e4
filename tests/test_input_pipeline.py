"""Tests of train/input_pipeline.py on TFDS mock data (no dataset files needed)."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow_datasets as tfds

from train import input_pipeline, prepare_data
from train.data import preparation
from train.data import sources

N = 40  # mock examples per split


@pytest.fixture(autouse=True)
def _fresh_cache():
  # Mock data must not be served from a cache filled by another test (and vice versa).
  input_pipeline.clear_cache()
  yield
  input_pipeline.clear_cache()


@pytest.fixture
def mock():
  with tfds.testing.mock_data(num_examples=N):
    yield


def _raw(name):
  """The mock split's examples in storage order: uint8 images, int labels."""
  ds = tfds.builder(name).as_dataset(split="test", shuffle_files=False)
  examples = list(tfds.as_numpy(ds))
  return np.stack([e["image"] for e in examples]), np.array([e["label"] for e in examples])


def _normalise(name, images):
  spec = input_pipeline._SPECS[name]
  return ((images.astype(np.float32) / 255.0 - np.array(spec.mean, np.float32))
          / np.array(spec.std, np.float32))


def _pixels(name, images):
  """Undoes the normalisation: uint8 pixels, exact (an error > 0.5/255 would not round back)."""
  spec = input_pipeline._SPECS[name]
  pixels = (images * np.array(spec.std) + np.array(spec.mean)) * 255
  assert np.abs(pixels - np.round(pixels)).max() < 1e-3
  return np.round(pixels).astype(np.uint8)


def _sorted_bytes(images):
  return sorted(a.tobytes() for a in images)


def _epoch(name, split="train", batch=16, **kwargs):
  return list(input_pipeline.create_split(name, split, batch, **kwargs))


@pytest.mark.parametrize("name", input_pipeline.IMAGE_DATASETS)  # text: tests/test_text_data.py
@pytest.mark.usefixtures("mock")
def test_batches_have_the_documented_shapes_and_dtypes(name):
  info = input_pipeline.get_info(name)
  batches = _epoch(name, train=True)
  assert len(batches) == N // 16  # train drops the partial batch
  for b in batches:
    assert set(b) == {"image", "label"}
    assert b["image"].shape == (16, *info.image_shape)
    assert b["image"].dtype == np.float32
    assert b["label"].shape == (16,) and b["label"].dtype == np.int32
    assert 0 <= b["label"].min() and b["label"].max() < info.num_classes
  expected_classes = {"mnist": 10, "fashion_mnist": 10, "cifar10": 10, "cifar100": 100}[name]
  assert info.num_classes == expected_classes
  assert info.num_train == N and info.num_test == N


@pytest.mark.usefixtures("mock")
def test_eval_yields_every_example_once_in_order_with_a_partial_last_batch():
  images, labels = _raw("mnist")
  batches = _epoch("mnist", split="test", batch=16, train=False)
  assert [len(b["label"]) for b in batches] == [16, 16, N - 32]
  np.testing.assert_array_equal(np.concatenate([b["label"] for b in batches]), labels)
  np.testing.assert_allclose(
      np.concatenate([b["image"] for b in batches]), _normalise("mnist", images),
      rtol=1e-6, atol=1e-6
  )


@pytest.mark.usefixtures("mock")
def test_drop_remainder_can_be_overridden():
  assert len(_epoch("mnist", split="test", batch=16, train=False, drop_remainder=True)) == N // 16
  batches = _epoch("mnist", batch=16, train=True, drop_remainder=False)
  assert [len(b["label"]) for b in batches] == [16, 16, N - 32]


@pytest.mark.usefixtures("mock")
def test_a_train_epoch_is_a_permutation_of_the_split():
  images, _ = _raw("mnist")
  batches = _epoch("mnist", train=True, drop_remainder=False, epoch=3, seed=7)
  seen = _pixels("mnist", np.concatenate([b["image"] for b in batches]))
  assert _sorted_bytes(seen) == _sorted_bytes(images)
  assert not np.array_equal(seen, images)  # actually shuffled


@pytest.mark.usefixtures("mock")
def test_train_epochs_depend_only_on_seed_and_epoch():
  def run(epoch, seed=0):
    return np.concatenate(
        [b["image"] for b in _epoch("cifar10", train=True, epoch=epoch, seed=seed)])

  first = [run(0), run(1)]  # an uninterrupted run: epoch 0 then epoch 1
  input_pipeline.clear_cache()  # a resumed run starts with nothing cached
  resumed = run(1)
  np.testing.assert_array_equal(resumed, first[1])
  np.testing.assert_array_equal(run(0), first[0])
  assert not np.array_equal(first[0], first[1])
  assert not np.array_equal(run(1, seed=1), first[1])


def _all_crops(image):
  """Every pad-4 / crop / optional-flip view of one uint8 image, as bytes."""
  padded = np.pad(image, ((4, 4), (4, 4), (0, 0)))
  views = {}
  for dy in range(9):
    for dx in range(9):
      crop = padded[dy : dy + 32, dx : dx + 32]
      views[crop.tobytes()] = (dy, dx, False)
      views[crop[:, ::-1].tobytes()] = (dy, dx, True)
  return views


@pytest.mark.usefixtures("mock")
def test_cifar_augmentation_is_pad_crop_flip_of_distinct_examples():
  images, _ = _raw("cifar10")
  spec = input_pipeline._SPECS["cifar10"]
  batches = _epoch("cifar10", train=True, drop_remainder=False, epoch=2)
  augmented = np.concatenate([b["image"] for b in batches])
  assert augmented.shape == (N, 32, 32, 3)
  lo = (0 - np.array(spec.mean)) / np.array(spec.std)
  hi = (1 - np.array(spec.mean)) / np.array(spec.std)
  assert np.all(augmented >= lo - 1e-5) and np.all(augmented <= hi + 1e-5)

  # Undo the normalisation exactly and find which example and view each one is.
  pixels = _pixels("cifar10", augmented)
  views = [_all_crops(image) for image in images]
  matched, transforms = set(), []
  for image in pixels:
    hits = [(i, v[image.tobytes()]) for i, v in enumerate(views) if image.tobytes() in v]
    assert hits, "augmented image is not a pad/crop/flip of any example"
    i, transform = hits[0]
    assert i not in matched
    matched.add(i)
    transforms.append(transform)
  assert len({t[:2] for t in transforms}) > 5  # many offsets
  assert {t[0] for t in transforms} | {t[1] for t in transforms} >= {0, 8}  # the full pad of 4
  assert {t[2] for t in transforms} == {False, True}  # both flips
  assert sum(t == (4, 4, False) for t in transforms) < N // 4  # images actually change


@pytest.mark.usefixtures("mock")
def test_mnist_and_eval_are_not_augmented():
  images, _ = _raw("cifar10")
  batches = _epoch("cifar10", split="test", train=False)
  np.testing.assert_allclose(
      np.concatenate([b["image"] for b in batches]), _normalise("cifar10", images),
      rtol=1e-6, atol=1e-6
  )
  mnist_images, _ = _raw("mnist")
  train = np.concatenate([b["image"] for b in _epoch("mnist", train=True, drop_remainder=False)])
  assert _sorted_bytes(_pixels("mnist", train)) == _sorted_bytes(mnist_images)


def test_unknown_dataset_is_a_value_error_listing_the_known_ones():
  with pytest.raises(ValueError, match="mnist, fashion_mnist, cifar10, cifar100"):
    input_pipeline.create_split("imagenet", "train", 8, train=True)
  with pytest.raises(ValueError, match="known"):
    input_pipeline.get_info("svhn")


@pytest.mark.usefixtures("mock")
def test_batch_size_must_split_over_processes(monkeypatch):
  with pytest.raises(ValueError, match="multiple"):
    input_pipeline.create_split("mnist", "train", 0, train=True)
  monkeypatch.setattr(input_pipeline.jax, "process_count", lambda: 2)
  with pytest.raises(ValueError, match="multiple"):
    input_pipeline.create_split("mnist", "train", 15, train=True)


def test_missing_dataset_says_how_to_get_it(tmp_path, monkeypatch):
  monkeypatch.setenv(input_pipeline.DOWNLOAD_ENV, "0")
  monkeypatch.setattr(sources, "find_local_source", lambda dataset: None)
  with pytest.raises(input_pipeline.DatasetUnavailableError) as error:
    input_pipeline.create_split("mnist", "train", 8, train=True, data_dir=str(tmp_path))
  message = str(error.value)
  assert (f"python -m train.prepare_data --dataset mnist --source DIR --data_dir {tmp_path}"
          in message)
  assert "machine with internet" in message
  with pytest.raises(input_pipeline.DatasetUnavailableError, match="machine with internet"):
    input_pipeline.get_info("cifar100", data_dir=str(tmp_path))


def _indices(name, batches):
  """Which stored example (its index in `_raw` order) each image of `batches` is; unaugmented."""
  images, _ = _raw(name)
  where = {image.tobytes(): i for i, image in enumerate(images)}
  assert len(where) == len(images), "mock images must be distinct"
  pixels = _pixels(name, np.concatenate([b["image"] for b in batches]))
  return [where[image.tobytes()] for image in pixels]


@pytest.mark.usefixtures("mock")
def test_mnist_epoch_order_depends_on_seed_and_epoch_only():
  # MNIST is not augmented: only the shuffle order can tell two epochs apart.
  def order(epoch, seed=0):
    return _indices("mnist",
                    _epoch("mnist", train=True, drop_remainder=False, epoch=epoch, seed=seed))

  first = [order(0), order(1), order(2)]
  assert len({tuple(o) for o in first}) == 3, "consecutive epochs must see different orders"
  input_pipeline.clear_cache()  # a resumed run starts with nothing cached
  assert order(1) == first[1] and order(0) == first[0]
  assert order(1, seed=1) != first[1]


@pytest.fixture(scope="module")
def small_mnist(tmp_path_factory):
  """A real TFDS MNIST of 40 train / 23 test random images (mock data ignores split slicing)."""
  from tests.test_prepare_data import _write_mnist_like

  root = tmp_path_factory.mktemp("small_mnist")
  raw = _write_mnist_like(root / "raw" / "mnist", sizes={"train": 40, "test": 23}, seed=3)
  prepare_data.prepare("mnist", root / "raw", root / "tfds")
  return str(root / "tfds"), raw


@pytest.mark.parametrize("processes", [2, 3])
def test_each_process_reads_a_disjoint_part_of_every_epoch(monkeypatch, small_mnist, processes):
  import jax

  data_dir, raw = small_mnist
  where = {split: {image.tobytes(): i for i, image in enumerate(images)}
           for split, (images, _) in raw.items()}

  def indices(split, **kwargs):
    batches = _epoch("mnist", split=split, batch=4 * processes, data_dir=data_dir, **kwargs)
    pixels = _pixels("mnist", np.concatenate([b["image"] for b in batches]))[..., 0]
    return [where[split][image.tobytes()] for image in pixels]

  monkeypatch.setattr(jax, "process_count", lambda: processes)
  train, test = [], []
  for index in range(processes):
    monkeypatch.setattr(jax, "process_index", lambda index=index: index)
    train.append([indices("train", train=True, epoch=e) for e in (0, 1)])
    test.append(indices("test", train=False))
  for epoch in (0, 1):
    parts = [t[epoch] for t in train]
    seen = [i for part in parts for i in part]
    assert len(seen) == len(set(seen)), f"processes overlap in epoch {epoch}"
    # Equal train shards: every process runs the same number of steps.
    assert {len(part) for part in parts} == {(40 // processes) // 4 * 4}
  assert train[0][0] != train[0][1]  # and each process reshuffles its part every epoch
  # Eval shards cover the split exactly once between them, none empty.
  assert sorted(i for t in test for i in t) == list(range(23))
  assert all(test)


def test_a_dataset_still_missing_after_preparing_is_named(tmp_path, monkeypatch):
  # The local preparation claims success but leaves nothing readable: the second read fails.
  monkeypatch.setattr(preparation, "maybe_prepare", lambda name, data_dir: True)
  with pytest.raises(input_pipeline.DatasetUnavailableError,
                     match=r"'mnist' is not available in .*Cause: AssertionError"):
    input_pipeline.create_split("mnist", "train", 8, train=True, data_dir=str(tmp_path))
