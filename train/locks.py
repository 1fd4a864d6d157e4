"""Inter-process file locks (fcntl), without the heavy imports of the rest of train/: the sweep
runner uses them too."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


def is_remote(workdir: str | os.PathLike) -> bool:
  """A bucket (``gs://``, ``s3://``…) rather than a local path."""
  return "://" in os.fspath(workdir)


def training_lock(workdir: str | os.PathLike, process_index: int = 0) -> Path:
  """The lock a training holds on its workdir (one per process of a multi-host run).

  A bucket (``gs://…``) has no file locks: its lock is a local file named by the workdir's URL,
  which keeps a second training of it off this machine only. Across machines what guards a
  bucket workdir is the job that owns it: one job per workdir (a cluster manager's job, or one
  sweep trial, whose workers hold it through their shared storage)."""
  name = f".running.process{process_index}"
  if not is_remote(workdir):
    return Path(workdir) / name
  digest = hashlib.sha256(os.fspath(workdir).encode()).hexdigest()[:16]
  return Path(tempfile.gettempdir()) / "sparse_optax_locks" / digest / name


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
