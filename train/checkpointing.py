"""Checkpoints of the train state: orbax, asynchronous, resumable, checked against the config.

* Saves return once the arrays are copied to host memory; the writing goes on in the
  background while training continues (orbax's async checkpointing). ``close`` waits for it.
* A checkpoint that cannot be read (a crash mid-write, a corrupted file) is skipped with a
  warning, and deleted so the run can write that step again: the previous one is restored.
* ``check_same_run`` refuses to resume checkpoints trained with another config.
"""

from __future__ import annotations

import json
from typing import Any

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from etils import epath

from train import distributed

# Fields that may change between a run and its resumption: where data comes from, where and
# how the run executes, and how it is shown or kept; not what is trained.
RESUMABLE_CHANGES = frozenset({
    "data_dir", "prepare_data", "progress_bar", "max_checkpoints_to_keep", "eval_batch_size",
    "checkpoint_every_steps", "sharding",
    *distributed.LAUNCH_FIELDS,
})

# Fields added after runs were started, each with the value that trains as those runs did: a
# saved config without one resumes as if it had that value.
ADDED_FIELDS = {"affine_greedy": False, "affine_leafwise": False, "affine_iterations": None,
                "l1_sparsity": None, "l1_sparsity_begin_epoch": 0, "l1_sparsity_end_epoch": 0,
                "l1_sparsity_scope": "global", "l1_solve_every": 1, "init_from": None,
                "nm_pattern": None, "warmup_steps": 0}


# Fields that only act when another is set: where that one is unset in both configs, a
# changed default of these (l1_solve_every went from 1 to 1000) changes nothing trained.
INERT_UNLESS = {"l1_solve_every": "l1_sparsity", "l1_sparsity_scope": "l1_sparsity",
                "l1_sparsity_begin_epoch": "l1_sparsity", "l1_sparsity_end_epoch": "l1_sparsity"}


def has_checkpoints(directory: epath.PathLike) -> bool:
  """Whether ``directory`` (a run's ``checkpoints/``) holds a checkpoint step."""
  directory = epath.Path(directory)
  return directory.is_dir() and any(p.name.isdigit() for p in directory.iterdir())


def check_same_run(config: ml_collections.ConfigDict, saved: dict[str, Any] | None,
                   workdir: Any) -> None:
  """Raises ``ValueError`` when the config ``saved`` with ``workdir``'s checkpoints (fields
  added since at their ``ADDED_FIELDS`` values) differs from ``config``.

  Resuming them would silently mix two runs (e.g. a new learning rate on top of a state that
  diverged under the old one); only the fields in ``RESUMABLE_CHANGES`` may differ.
  """
  if saved is None:
    return
  current = json.loads(config.to_json_best_effort())
  def inert(k):
    governing = INERT_UNLESS.get(k)
    return governing is not None and saved.get(governing) is None and current.get(
        governing) is None

  changed = sorted(k for k in set(saved) | set(current)
                   if k not in RESUMABLE_CHANGES and not inert(k)
                   and saved.get(k) != current.get(k))
  if changed:
    diff = ", ".join(f"{k}: {saved.get(k)!r} -> {current.get(k)!r}" for k in changed)
    raise ValueError(f"{workdir} holds checkpoints of a different config ({diff}). Resuming "
                     "would mix two runs: use a new workdir, or delete this one to start over.")


class Checkpointer:
  """A run's orbax ``CheckpointManager`` (on its ``checkpoints/``), with the loop's save and
  restore policy."""

  def __init__(self, directory: epath.PathLike, max_to_keep: int | None):
    self.manager = ocp.CheckpointManager(
        epath.Path(directory),
        options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                             enable_async_checkpointing=True))

  def restore(self, target: Any) -> Any | None:
    """The newest readable checkpoint, restored into ``target``'s structure and shardings
    (``None`` when there is none). Unreadable newer ones are deleted, with a warning."""
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
    for step in sorted(self.manager.all_steps(), reverse=True):
      try:
        return self.manager.restore(step, args=ocp.args.StandardRestore(abstract))
      except Exception as error:  # pylint: disable=broad-except
        if _is_mismatch(error):
          raise ValueError(
              f"The checkpoint of step {step} in {self.manager.directory} does not fit this "
              f"config's train state ({error}). It was written by another version of the code "
              "or another model: use a new workdir.") from error
        logging.warning("Checkpoint of step %d in %s cannot be read (%s: %s); it is deleted "
                        "and the previous one is tried.", step, self.manager.directory,
                        type(error).__name__, str(error).splitlines()[0][:200])
        self.manager.delete(step)
    return None

  def save(self, state: dict[str, Any], *, wait: bool = False) -> None:
    """Starts saving ``state`` at its step (once per step), without waiting for the write.

    The loop donates its state to the next step, which frees these buffers while the
    background write runs: the save gets its own copy, so that it never depends on orbax
    having finished its host copy first. The previous save is finished first: one save in
    flight at a time.
    """
    step = int(jax.device_get(state["step"]))
    self.manager.wait_until_finished()
    if step not in self.manager.all_steps():
      own = jax.tree.map(lambda x: x.copy() if isinstance(x, jax.Array) else x, state)
      self.manager.save(step, args=ocp.args.StandardSave(own))
      if wait:
        self.manager.wait_until_finished()

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()


def start_from(directory: epath.PathLike, state: dict[str, Any], tx: Any) -> dict[str, Any]:
  """``state`` with the params and BatchNorm statistics of the latest checkpoint in
  ``directory`` (another run's ``checkpoints/``).

  The optimizer state is built anew from those params (xRDA's dual average and RDA's
  centre start there), and the step count starts at 0: a trained dense model to sparsify.
  """
  directory = epath.Path(directory)
  manager = ocp.CheckpointManager(directory,
                                  options=ocp.CheckpointManagerOptions(read_only=True))
  try:
    step = manager.latest_step()
    if step is None:
      raise ValueError(f"config.init_from: {directory} holds no checkpoint to start from.")
    saved = manager.restore(step, args=ocp.args.StandardRestore())
  finally:
    manager.close()
  out = dict(state)
  for key in ("params", "batch_stats"):
    # By path: a checkpoint read without a target has string keys where the model has ints.
    theirs = {_path(p): x for p, x in jax.tree_util.tree_leaves_with_path(saved.get(key, {}))}
    mine = jax.tree_util.tree_leaves_with_path(state[key])
    if set(theirs) != {_path(p) for p, _ in mine} or any(
        np.shape(theirs[_path(p)]) != x.shape for p, x in mine):
      raise ValueError(
          f"config.init_from: the {key} of {directory} (step {step}) do not fit this config's "
          "model; start from a run of the same model and dataset.")
    out[key] = jax.tree_util.tree_map_with_path(
        lambda p, x: jax.numpy.asarray(theirs[_path(p)], x.dtype), state[key])
  out["opt_state"] = tx.init(out["params"])
  logging.info("Starting from the params of %s, step %d.", directory, step)
  return out


def restore_part(directory: epath.PathLike, target: dict[str, Any],
                 what: str) -> tuple[int, dict[str, Any]]:
  """``(step, tree)``: the part of the latest checkpoint in ``directory`` that ``target`` (a
  tree of ``jax.ShapeDtypeStruct``, e.g. params and BatchNorm statistics without the optimizer
  state) names, read-only.

  Raises:
    FileNotFoundError: no checkpoint in ``directory``.
    ValueError: the checkpoint does not hold ``target``'s tree (``what`` says what was
      expected).
  """
  directory = epath.Path(directory)
  if not directory.is_dir():
    raise FileNotFoundError(f"No checkpoint in {directory.parent}: no {directory.name}/ folder.")
  with ocp.CheckpointManager(directory,
                             options=ocp.CheckpointManagerOptions(read_only=True)) as manager:
    step = manager.latest_step()
    if step is None:
      raise FileNotFoundError(f"No checkpoint in {directory}: train the run first "
                              "(python -m train.main), or pass its workdir.")
    try:
      restored = manager.restore(step, args=ocp.args.PyTreeRestore(
          target, restore_args=ocp.checkpoint_utils.construct_restore_args(target),
          partial_restore=True))
    except (ValueError, KeyError, TypeError) as e:
      raise ValueError(f"The checkpoint of step {step} in {directory} does not hold "
                       f"{what}: {e}") from e
  mismatched = [f"{jax.tree_util.keystr(path)} {x.shape} (model: {t.shape})"
                for (path, x), t in zip(jax.tree_util.tree_leaves_with_path(restored),
                                        jax.tree.leaves(target))
                if x.shape != t.shape]
  if jax.tree.structure(restored) != jax.tree.structure(target) or mismatched:
    raise ValueError(f"The checkpoint of step {step} in {directory} does not hold "
                     f"{what}: {', '.join(mismatched) or 'other leaves'}.")
  return int(step), restored


def _path(path) -> str:
  return "/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)


def _is_mismatch(error: Exception) -> bool:
  """A checkpoint of another tree structure or shapes, as opposed to unreadable bytes."""
  text = str(error)
  return isinstance(error, (ValueError, KeyError)) and any(
      s in text for s in ("tree structure", "Missing", "Dict key mismatch", "shape", "Shape"))
