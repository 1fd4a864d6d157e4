"""Inter-process file locks (fcntl), without the heavy imports of the rest of train/: the sweep
runner uses them too."""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Iterator
from pathlib import Path


def training_lock(workdir: Path, process_index: int = 0) -> Path:
  """The lock a training holds on its workdir (one per process of a multi-host run)."""
  return workdir / f".running.process{process_index}"


@contextlib.contextmanager
def exclusive(lock: Path, *, wait: bool = True) -> Iterator[None]:
  """Holds ``lock`` (created if missing) until the block ends; waits for another holder, or
  with ``wait=False`` raises BlockingIOError."""
  lock.parent.mkdir(parents=True, exist_ok=True)
  with open(lock, "a") as f:
    fcntl.flock(f, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
    try:
      yield
    finally:
      fcntl.flock(f, fcntl.LOCK_UN)


def held(lock: Path) -> bool:
  """Whether another open file holds ``lock`` now."""
  if not lock.exists():
    return False
  with open(lock, "a") as f:
    try:
      fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      return True
    fcntl.flock(f, fcntl.LOCK_UN)
  return False
