"""tf.data input pipelines for MNIST, Fashion-MNIST, CIFAR-10 and CIFAR-100 (the papers' augmentation),
and Shakespeare's plays for language modelling.

``create_split`` returns ONE epoch of numpy batches
``{"image": float32 [B, H, W, C], "label": int32 [B]}`` with
``B = global_batch_size // jax.process_count()``; each process reads its own
shard of the split (``tfds.split_for_jax_process``). A text dataset (``shakespeare``,
``train.data.text``) gives ``{"tokens": int32 [B, T], "label": int32 [B, T]}``: a window's
bytes as input and the same bytes shifted by one as next-token targets; its ``num_classes``
is the vocabulary and its ``image_shape`` the input's shape ``(T,)``.

Training epochs are a pure function of ``(seed, epoch)``: the shuffle seed and
the augmentation seeds are derived from them (stateless TF random ops, a fixed
shuffle seed per epoch, deterministic tf.data), so a run resumed at epoch ``e``
sees exactly the batches an uninterrupted run sees. TF's shuffle combines its
seed with TF's global seed, so do not call ``tf.random.set_seed`` in one run
and not the other.

Evaluation (``train=False``) reads the split in order, unaugmented, and by
default keeps the last, partial batch: every example is seen exactly once and
no padding can leak into metrics. Each process yields ``ceil(n_p / B)`` batches
for its shard of ``n_p`` examples; with several processes shards may differ by
one example, so a multi-process evaluation loop must cope with unequal counts.

Decoded examples are cached in memory, per (dataset, split, process shard),
for the life of the Python process: the first epoch reads TFDS, later epochs
read RAM.

A dataset missing from ``data_dir`` is first prepared from a known local copy
of the raw files (``train.data.preparation.maybe_prepare``), then TFDS's normal
download is tried (skipped when ``SPARSE_OPTAX_DOWNLOAD=0``; offline, TFDS
retries for a few minutes before it gives up); if both fail,
``DatasetUnavailableError`` says how to get the data.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator

import jax
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from train import data, locks
from train.data import preparation, text

# JAX owns the accelerators; TF here only reads data.
try:
  tf.config.set_visible_devices([], "GPU")
except RuntimeError:  # TF's devices were already initialised elsewhere
  pass

DOWNLOAD_ENV = "SPARSE_OPTAX_DOWNLOAD"

_CIFAR_PAD = 4


@dataclasses.dataclass(frozen=True)
class _Spec:
  num_classes: int
  image_shape: tuple[int, int, int]
  mean: tuple[float, ...]
  std: tuple[float, ...]
  augment: bool
  text: bool = False  # examples are token windows, not images


# Per-channel statistics of each training set, on [0, 1] pixels.
_SPECS = {
    "mnist": _Spec(10, (28, 28, 1), (0.1307,), (0.3081,), augment=False),
    "fashion_mnist": _Spec(10, (28, 28, 1), (0.2860,), (0.3530,), augment=False),
    "cifar10": _Spec(10, (32, 32, 3), (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), augment=True),
    "cifar100": _Spec(100, (32, 32, 3), (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762), augment=True),
    "shakespeare": _Spec(text.VOCAB, (text.CONTEXT,), (), (), augment=False, text=True),
}
DATASETS = tuple(_SPECS)
IMAGE_DATASETS = tuple(name for name, known in _SPECS.items() if not known.text)
TEXT_DATASETS = tuple(name for name, known in _SPECS.items() if known.text)


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  """Static facts about a dataset; counts are over all processes."""

  name: str
  num_classes: int
  image_shape: tuple[int, int, int]
  num_train: int  # examples in the split used for training (e.g. "train[:90%]")
  num_test: int  # examples in the evaluation split


class DatasetUnavailableError(RuntimeError):
  """The dataset is not in data_dir and could be neither prepared nor downloaded."""


def spec(name: str) -> _Spec:
  """The dataset's class count (vocabulary), image (input) shape and statistics, without
  reading it."""
  if name not in _SPECS:
    raise ValueError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")
  return _SPECS[name]


def _unavailable(name: str, data_dir, cause: BaseException | None) -> DatasetUnavailableError:
  where = data_dir or "the default TFDS data dir ($TFDS_DATA_DIR or ~/tensorflow_datasets)"
  how = []
  if name in data.SUPPORTED:
    how.append(
        f"run `python -m train.prepare_data --dataset {name} --source DIR --data_dir {data_dir or 'D'}` "
        "(DIR: the raw files)"
    )
  how.append(f"let TFDS download it on a machine with internet (`tfds.load({name!r}, data_dir=...)`)")
  message = f"TFDS dataset {name!r} is not available in {where}. To get it, " + ", or ".join(how) + "."
  if cause is not None:
    message += f" (Cause: {type(cause).__name__}: {cause})"
  return DatasetUnavailableError(message)


def _make_available(name: str, data_dir) -> None:
  """Prepares `name` from local raw files if possible, else downloads it (if allowed)."""
  try:
    if preparation.maybe_prepare(name, data_dir):
      return
  except Exception as e:  # a broken local copy: say so rather than download
    raise _unavailable(name, data_dir, e) from e
  if os.environ.get(DOWNLOAD_ENV, "1") == "0":
    raise _unavailable(name, data_dir, None)
  try:
    builder = tfds.builder(name, data_dir=data_dir)
    with locks.exclusive(preparation.preparation_lock(builder)):
      builder = tfds.builder(name, data_dir=data_dir)  # another process may have built it
      if not builder.is_prepared():
        builder.download_and_prepare()
  except Exception as e:  # offline, or TFDS missing an optional dependency
    raise _unavailable(name, data_dir, e) from e


def _read(name: str, split, data_dir) -> tf.data.Dataset:
  """The split's examples in storage order; prepares/downloads the dataset if missing."""
  read_config = tfds.ReadConfig(try_autocache=False)  # we cache decoded examples ourselves

  def read():
    builder = tfds.builder(name, data_dir=data_dir)
    return builder.as_dataset(split=split, shuffle_files=False, read_config=read_config)

  try:
    return read()
  except AssertionError:  # TFDS's "could not find data in ..."
    if tfds.builder(name, data_dir=data_dir).is_prepared():
      raise
  _make_available(name, data_dir)
  try:
    return read()
  except AssertionError as e:
    raise _unavailable(name, data_dir, e) from e


def _num_examples(ds: tf.data.Dataset) -> int:
  n = int(ds.cardinality())
  if n < 0:  # TFDS always knows split sizes; guard against silent misuse
    raise ValueError("split of unknown size")
  return n


def get_info(
    name: str,
    *,
    data_dir: str | None = None,
    train_split: str = "train",
    eval_split: str = "test",
) -> DatasetInfo:
  """Returns the dataset's shape, class count and split sizes (all processes)."""
  known = spec(name)
  return DatasetInfo(
      name=name,
      num_classes=known.num_classes,
      image_shape=known.image_shape,
      num_train=_num_examples(_read(name, train_split, data_dir)),
      num_test=_num_examples(_read(name, eval_split, data_dir)),
  )


# (name, split, process index, process count, drop_remainder, data_dir) -> cached dataset
_CACHE: dict[tuple, tf.data.Dataset] = {}


def clear_cache() -> None:
  """Forgets the in-memory caches of decoded examples."""
  _CACHE.clear()


def _cached_examples(name: str, split: str, data_dir, even: bool) -> tf.data.Dataset:
  """(image uint8, label int32), or (tokens uint8, targets int32), of this process's shard,
  cached in memory after one pass."""
  index, count = jax.process_index(), jax.process_count()
  key = (name, split, index, count, even, data_dir)
  if key not in _CACHE:
    # Train shards are equal (remainder dropped) so every process runs the
    # same number of steps; eval shards keep every example.
    shard = split if count == 1 else tfds.split_for_jax_process(
        split, process_index=index, process_count=count, drop_remainder=even
    )
    ds = _read(name, shard, data_dir)
    if spec(name).text:  # a window: input tokens, and the same shifted by one as targets
      example = lambda ex: (ex["tokens"][:-1], tf.cast(ex["tokens"][1:], tf.int32))
    else:
      example = lambda ex: (ex["image"], tf.cast(ex["label"], tf.int32))
    ds = ds.map(example, num_parallel_calls=tf.data.AUTOTUNE)
    _CACHE[key] = ds.cache()
  return _CACHE[key]


def _seed_words(*words: int) -> list[int]:
  """Two 31-bit words from arbitrary ints: a stateless TF seed, and int-safe."""
  state = np.random.SeedSequence([int(w) for w in words]).generate_state(2)
  return [int(s) >> 1 for s in state]


def _random_crop_flip(images: tf.Tensor, key: tf.Tensor) -> tf.Tensor:
  """Pads by 4 (zeros), crops back to size at random offsets, flips half: per example."""
  batch = tf.shape(images)[0]
  height, width = images.shape[1], images.shape[2]
  padded = tf.pad(images, [[0, 0], [_CIFAR_PAD, _CIFAR_PAD], [_CIFAR_PAD, _CIFAR_PAD], [0, 0]])
  offset_key, flip_key = tf.unstack(tf.random.experimental.stateless_split(key, 2))
  offsets = tf.random.stateless_uniform([batch, 2], offset_key, 0, 2 * _CIFAR_PAD + 1, tf.int32)
  flip = tf.random.stateless_uniform([batch], flip_key) < 0.5
  rows = offsets[:, :1] + tf.range(height)[None]
  cols = offsets[:, 1:] + tf.range(width)[None]
  cols = tf.where(flip[:, None], tf.reverse(cols, [1]), cols)  # flip = read columns backwards
  out = tf.gather(padded, rows, axis=1, batch_dims=1)
  return tf.gather(out, cols, axis=2, batch_dims=1)


def create_split(
    name: str,
    split: str,
    global_batch_size: int,
    *,
    train: bool,
    epoch: int = 0,
    seed: int = 0,
    data_dir: str | None = None,
    drop_remainder: bool | None = None,
) -> Iterator[dict[str, np.ndarray]]:
  """Returns an iterator over one epoch of this process's batches.

  Args:
    name: one of `DATASETS`.
    split: any TFDS split string, e.g. "train", "test", "train[:90%]".
    global_batch_size: batch size over all processes; must be divisible by
      `jax.process_count()`.
    train: shuffle and augment (CIFAR) as a function of (seed, epoch);
      otherwise read in order, unaugmented.
    epoch, seed: select the shuffle order and augmentation of a train epoch.
    data_dir: TFDS data dir (None: TFDS's default).
    drop_remainder: drop the last partial batch; default True for train,
      False for eval.
  """
  known = spec(name)
  processes = jax.process_count()
  if global_batch_size <= 0 or global_batch_size % processes:
    raise ValueError(
        f"global_batch_size {global_batch_size} must be a positive multiple of the {processes} processes"
    )
  batch_size = global_batch_size // processes
  drop_remainder = train if drop_remainder is None else drop_remainder

  ds = _cached_examples(name, split, data_dir, even=train)
  if train:
    shuffle_seed = _seed_words(seed, epoch, jax.process_index(), 0)[0]
    ds = ds.shuffle(_num_examples(ds), seed=shuffle_seed, reshuffle_each_iteration=False)
  ds = ds.batch(batch_size, drop_remainder=drop_remainder, num_parallel_calls=tf.data.AUTOTUNE)

  augment = train and known.augment
  epoch_key = tf.constant(_seed_words(seed, epoch, jax.process_index(), 1), tf.int64)
  # (x / 255 - mean) / std as one multiply-add: normalisation is a large share of the cost.
  if not known.text:
    scale = tf.constant(1.0 / (255.0 * np.array(known.std)), tf.float32)
    offset = tf.constant(-np.array(known.mean) / np.array(known.std), tf.float32)

  def preprocess(step, batch):
    images, labels = batch
    if known.text:
      return {"tokens": tf.cast(images, tf.int32), "label": labels}
    if augment:
      key = tf.random.experimental.stateless_fold_in(epoch_key, step)
      images = _random_crop_flip(images, key)
    images = tf.cast(images, tf.float32) * scale + offset
    return {"image": images, "label": labels}

  ds = ds.enumerate().map(preprocess, num_parallel_calls=tf.data.AUTOTUNE)
  ds = ds.prefetch(tf.data.AUTOTUNE)
  options = tf.data.Options()
  options.deterministic = True
  ds = ds.with_options(options)
  return ds.as_numpy_iterator()
