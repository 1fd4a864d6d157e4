"""Inter-process file locks (fcntl), without the heavy imports of the rest of train/: the sweep
runner uses them too."""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def exclusive(lock: Path) -> Iterator[None]:
  """Holds ``lock`` (created if missing) until the block ends; waits for another holder."""
  lock.parent.mkdir(parents=True, exist_ok=True)
  with open(lock, "a") as f:
    fcntl.flock(f, fcntl.LOCK_EX)
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
