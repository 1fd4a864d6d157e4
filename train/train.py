"""Training and evaluation loop: Flax NNX model, sparse_optax optimizer, data-parallel jit.

``train_and_evaluate(config, workdir)`` builds the data, the model and the optimizer from
``config`` (the method from ``train.methods``' registry), then per epoch trains, evaluates,
measures sparsity, runs the method's epoch-end callback (LOBSTER's prune-on-plateau), logs
(stdout, ``workdir/metrics.jsonl``, TensorBoard) and checkpoints (``train.checkpointing``).
Rerunning with the same workdir resumes from the latest checkpoint, mid-epoch included, and
ends with exactly the parameters of an uninterrupted run: data order depends only on
``(seed, epoch)``, and model init only on ``seed``.

Data parallelism: one mesh axis ``"data"`` over all devices of all hosts; the batch is split
along it. ``config.sharding = "replicated"`` keeps params and optimizer state whole on every
device; ``"fsdp"`` splits each leaf along its largest axis divisible by the device count.
``jax.jit`` inserts the collectives either way, so BatchNorm statistics are those of the
global batch. The step donates the state: its buffers are reused for the new one.

SIGTERM (what SLURM, Kubernetes and preemptible TPUs send before a kill) and Ctrl-C stop the
run after the current step with a checkpoint; a second Ctrl-C stops at once.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import itertools
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging
from etils import epath
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from train import checkpointing, configuration, distributed, evaluation, input_pipeline
from train import locks, methods, reporting, run_folder, steps
from train.data import preparation
# The names other code imports from here.
from train.configuration import validate_config  # noqa: F401
from train.methods import OPTIMIZERS, create_optimizer, learning_rate_at, not_normalization  # noqa: F401
from train.steps import create_train_state, eval_step, train_step  # noqa: F401

StepHook = Callable[[int], None]


class Stopped(KeyboardInterrupt):
  """The run stopped on a signal after saving a checkpoint; ``signum`` says which."""

  def __init__(self, signum: int):
    super().__init__(signal.Signals(signum).name)
    self.signum = signum


@contextlib.contextmanager
def _stop_requests():
  """Turns the first SIGINT or SIGTERM into a request the loop sees after its step (a signal
  mid-step would leave the donated state half consumed); the second acts as usual."""
  requested: list[int] = []
  if threading.current_thread() is not threading.main_thread():
    yield requested
    return
  previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

  def handler(signum, frame):
    del frame
    requested.append(signum)
    signal.signal(signum, previous[signum])

  for s in previous:
    signal.signal(s, handler)
  try:
    yield requested
  finally:
    for s, h in previous.items():
      signal.signal(s, h)


def _requested_anywhere(requested: list[int]) -> int:
  """The signal any process received (0 if none), the same on every process.

  A cluster manager signals every process, but a kill by hand or a lost host may reach one:
  the others would then block in the next step's collectives. One small all-gather per step
  (multi-process runs only) lets every process stop at the same step with a checkpoint.
  """
  local = requested[0] if requested else 0
  if jax.process_count() == 1:
    return local
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  return int(np.max(multihost_utils.process_allgather(np.int32(local))))


def _data_sizes(config: ml_collections.ConfigDict):
  if config.prepare_data:
    preparation.maybe_prepare(config.dataset, config.data_dir)
  info = input_pipeline.get_info(config.dataset, data_dir=config.data_dir,
                                 train_split=config.train_split, eval_split=config.eval_split)
  steps_per_epoch = info.num_train // config.batch_size
  if steps_per_epoch == 0:
    raise ValueError(f"config.batch_size={config.batch_size} exceeds the {info.num_train} "
                     f"training examples of {config.dataset}.")
  return info, steps_per_epoch


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | os.PathLike, *,
                       hooks: Sequence[StepHook] = ()) -> dict[str, Any]:
  """Trains ``config`` in ``workdir`` (resuming from its latest checkpoint) and evaluates.

  Args:
    config: a config from ``train/configs`` (validated before anything runs).
    workdir: where checkpoints, ``config.json``, ``metrics.jsonl`` and TensorBoard
      event files go.
    hooks: called as ``hook(step)`` after every train step (``step`` = steps done);
      a hook may raise ``KeyboardInterrupt`` to stop (a checkpoint is saved first).

  Returns:
    The metrics of the last epoch (the last line of ``metrics.jsonl``).
  """
  distributed.initialize(config)
  configuration.validate_config(config)
  workdir = run_folder.path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  with _only_training_in(workdir):
    return _train_and_evaluate(config, workdir, hooks)


@contextlib.contextmanager
def _only_training_in(workdir: epath.Path):
  """Refuses a second training of the same workdir (the same process index) while one runs:
  the two would write each other's checkpoints and metrics. The lock goes with its process,
  however that ends. (A bucket has no locks: there the lock guards this machine only, see
  ``locks.training_lock``.)"""
  lock = locks.training_lock(workdir, jax.process_index())
  with contextlib.ExitStack() as stack:
    try:
      stack.enter_context(locks.exclusive(lock, wait=False))
    except BlockingIOError:
      raise RuntimeError(
          f"Another training is running in {workdir} (it holds {lock.name}); two would "
          "overwrite each other's checkpoints. Wait for it or stop it (Ctrl-C or SIGTERM "
          "saves a checkpoint), then rerun to resume.") from None
    yield


def _train_and_evaluate(config: ml_collections.ConfigDict, workdir: epath.Path,
                        hooks: Sequence[StepHook]) -> dict[str, Any]:
  is_chief = jax.process_index() == 0
  run_folder.check_resumable(config, workdir)
  if is_chief:
    run_folder.write_config(workdir, config)

  info, steps_per_epoch = _data_sizes(config)
  total_steps = config.num_epochs * steps_per_epoch
  mesh = jax.make_mesh((jax.device_count(),), ("data",), (jax.sharding.AxisType.Auto,))
  data_sharding = NamedSharding(mesh, P("data"))
  method = methods.get_method(config.optimizer)
  callbacks = [method.callback(config)] if method.callback is not None else []
  tx = methods.create_optimizer(config, total_steps, steps_per_epoch)
  model, state = steps.create_train_state(config, info, tx, {c.name: c.state() for c in callbacks})
  if config.init_from is not None:
    state = checkpointing.start_from(run_folder.checkpoints_dir(config.init_from), state, tx)
  shardings = steps.state_shardings(state, mesh, config.sharding)
  state = jax.device_put(state, shardings)
  checkpoints = checkpointing.Checkpointer(run_folder.checkpoints_dir(workdir),
                                           config.max_checkpoints_to_keep)
  state = checkpoints.restore(state) or state
  for callback in callbacks:
    callback.restore(state["callbacks"][callback.name])
  step = int(jax.device_get(state["step"]))

  train = jax.jit(functools.partial(steps.train_step, model, tx), donate_argnums=0,
                  in_shardings=(shardings, data_sharding), out_shardings=(shardings, None))
  evaluator = evaluation.Evaluator(config, info, model, shardings, data_sharding, total_steps)
  reporter = reporting.Reporter(workdir, is_chief)
  record: dict[str, Any] = {}
  with _stop_requests() as stop, contextlib.closing(checkpoints):
    try:
      for epoch in range(step // steps_per_epoch, config.num_epochs):
        start, skip = time.time(), step - epoch * steps_per_epoch
        if skip == 0:  # a new epoch; a resumed one keeps the averages of its first steps
          state["train_metrics"] = jax.device_put(steps.TrainMetrics.empty(),
                                                  shardings["train_metrics"])
        queued = collections.deque(maxlen=1 if evaluator.block_each_step else _QUEUED_STEPS)
        for batch in _train_batches(config, epoch, skip, steps_per_epoch, is_chief):
          state, metrics = train(state, steps.global_batch(batch, data_sharding))
          queued.append(metrics)
          if len(queued) == queued.maxlen:
            jax.block_until_ready(queued.popleft())
          step += 1
          for hook in hooks:
            hook(step)
          if config.checkpoint_every_steps and step % config.checkpoint_every_steps == 0:
            # Blocking. Async, this save fails in the background about one run in two (orbax
            # 0.12.8, CPU): FileNotFoundError on "<step>.orbax-checkpoint-tmp/.../
            # array_metadatas/process_0", the array metadata written after the tmp dir was
            # renamed. A two-save script outside the loop did not reproduce it (0 of 6).
            checkpoints.save(state, wait=True)
          signum = _requested_anywhere(stop)
          if signum:
            raise Stopped(signum)
        if step != (epoch + 1) * steps_per_epoch:
          raise RuntimeError(f"Epoch {epoch} of {config.dataset} gave "
                             f"{step - epoch * steps_per_epoch} batches of {config.batch_size}, "
                             f"expected {steps_per_epoch}.")
        record = evaluator.record(state, epoch + 1, time.time() - start)
        if skip:  # the time before the restart is not known: say so rather than under-report
          record["epoch_resumed_at_step"] = step - steps_per_epoch + skip
        if not math.isfinite(record["train_loss"]):  # the last good checkpoint stays the latest
          raise FloatingPointError(
              f"Training diverged in epoch {epoch + 1}: the train loss is "
              f"{record['train_loss']}. To fix, {methods.divergence_advice(config)}, or wrap "
              "the optimizer in optax.apply_if_finite.")
        for callback in callbacks:
          view = evaluation.CallbackView(evaluator, state, epoch + 1, record["epoch_time_s"])
          params, record = callback.on_epoch_end(state["params"], record, view)
          state = {**state, "params": params,
                   "callbacks": {**state["callbacks"], callback.name: callback.state()}}
          state = jax.device_put(state, shardings)
        reporter.write(record)
        checkpoints.save(state)
    except KeyboardInterrupt:
      _save_on_stop(checkpoints, state, workdir)
      raise

  if not record:  # already trained: a rerun of a finished run only evaluates
    state["train_metrics"] = jax.device_put(steps.TrainMetrics.empty(), shardings["train_metrics"])
    record = evaluator.record(state, config.num_epochs, 0.0)
  reporter.close()
  reporter.final(record)
  return record


# Steps in flight when the loop waits for the oldest: enough that the next batches are read
# while a step computes, few enough that a slow step does not queue a whole epoch of batches.
_QUEUED_STEPS = 3


def _train_batches(config, epoch: int, skip: int, steps_per_epoch: int, is_chief: bool):
  """The epoch's batches, less the ``skip`` consumed before a restart (with a progress bar)."""
  batches = input_pipeline.create_split(
      config.dataset, config.train_split, config.batch_size, train=True, epoch=epoch,
      seed=config.seed, data_dir=config.data_dir, drop_remainder=True)
  batches = itertools.islice(batches, skip, steps_per_epoch)
  if config.progress_bar and is_chief and sys.stdout.isatty():
    import tqdm  # pylint: disable=g-import-not-at-top
    batches = tqdm.tqdm(batches, total=steps_per_epoch, initial=skip, leave=False,
                        dynamic_ncols=True, desc=f"epoch {epoch + 1}/{config.num_epochs}")
  return batches


def _save_on_stop(checkpoints: checkpointing.Checkpointer, state: dict[str, Any],
                  workdir: epath.Path) -> None:
  try:
    checkpoints.save(state)
    checkpoints.wait()
  except RuntimeError as error:  # a second Ctrl-C mid-step: the donated state is gone
    logging.warning("No checkpoint of the interrupted step (%s); the last one stands.", error)
    return
  logging.warning("Stopped: checkpoint of step %d saved in %s; rerun to resume.",
                  int(jax.device_get(state["step"])), workdir)
