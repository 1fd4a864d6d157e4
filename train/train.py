"""Training and evaluation loop: Flax NNX model, sparse_optax optimizer, data-parallel jit.

The shape of flax's ``examples/imagenet/train.py``: ``train_and_evaluate(config,
workdir)`` builds the data, the model and the optimizer from ``config``, then
per epoch trains, evaluates on the test split, measures sparsity, logs (stdout,
``workdir/metrics.jsonl``, TensorBoard) and checkpoints (orbax). Rerunning with
the same workdir resumes from the latest checkpoint, mid-epoch included, and
ends with exactly the parameters of an uninterrupted run: data order depends
only on ``(seed, epoch)``, and model init only on ``seed``.

Data parallelism: one mesh axis ``"data"`` over all devices (all hosts); the
batch is sharded along it, parameters and optimizer state are replicated, and
``jax.jit`` inserts the gradient and BatchNorm reductions, so BatchNorm
statistics are those of the global batch.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import itertools
import json
import math
import os
import re
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp
from absl import logging
from flax import nnx
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

import models
import sparse_optax as so
from train import input_pipeline, lobster, prepare_data

DATASETS = input_pipeline.DATASETS
OPTIMIZERS = ("xrda", "rda", "prox_sgd", "sgd", "affine_scaling", "lobster")
L1_WEIGHTS = ("log", "uniform")
PRUNINGS = ("none", "once", "gradual")
ACCUMULATOR_DTYPES = {"float32": None, "bfloat16": jnp.bfloat16}  # None: the params' dtype
LR_SCHEDULES = ("cosine", "constant")
AVERAGINGS = ("cosine", "zero", "one")

Batch = Mapping[str, Any]
StepHook = Callable[[int], None]


# --------------------------------------------------------------------------- config


def _flatten_keys(config: Mapping[str, Any], prefix: str = "") -> set[str]:
  keys = set()
  for key, value in config.items():
    if isinstance(value, (ml_collections.ConfigDict, dict)):
      keys |= _flatten_keys(value, f"{prefix}{key}.")
    else:
      keys.add(f"{prefix}{key}")
  return keys


def validate_config(config: ml_collections.ConfigDict) -> None:
  """Raises ``ValueError`` for anything that would fail (or silently misbehave) later.

  Checks: every key exists in ``configs/default.py``; model, dataset, optimizer,
  schedule, structure and init names; batch sizes divisible by the device count.
  """
  from train.configs import default  # pylint: disable=g-import-not-at-top

  unknown = sorted(_flatten_keys(config) - _flatten_keys(default.get_config()))
  if unknown:
    known = sorted(_flatten_keys(default.get_config()))
    hints = [f"{k!r} (did you mean {difflib.get_close_matches(k, known, 1)[0]!r}?)"
             if difflib.get_close_matches(k, known, 1) else repr(k) for k in unknown]
    raise ValueError(f"Unknown config key(s): {', '.join(hints)}. Valid keys: {', '.join(known)}.")

  def check_name(field: str, value: str, valid: Iterable[str]) -> None:
    valid = sorted(valid)
    if value not in valid:
      raise ValueError(f"Unknown {field} {value!r} (config.{field}); valid: {', '.join(valid)}.")

  check_name("model", config.model, models.MODELS)
  check_name("dataset", config.dataset, DATASETS)
  check_name("optimizer", config.optimizer, OPTIMIZERS)
  check_name("lr_schedule", config.lr_schedule, LR_SCHEDULES)
  check_name("averaging", config.averaging, AVERAGINGS)
  check_name("structure", config.structure, so.STRUCTURES)
  check_name("accumulator_dtype", config.accumulator_dtype, ACCUMULATOR_DTYPES)
  check_name("init", config.init, models.INITS)
  check_name("l1_weights", config.l1_weights, L1_WEIGHTS)
  check_name("pruning", config.pruning, PRUNINGS)
  check_name("pruning_scope", config.pruning_scope, so.PRUNING_SCOPES)
  check_name("affine_method", config.affine_method, so.AFFINE_SCALING_METHODS)
  if config.pruning == "gradual" and config.pruning_end_epoch <= config.pruning_begin_epoch:
    raise ValueError("config.pruning='gradual' needs pruning_end_epoch > pruning_begin_epoch; got "
                     f"{config.pruning_begin_epoch} and {config.pruning_end_epoch}.")
  if config.optimizer == "lobster" and config.validation_split is None:
    raise ValueError("config.optimizer='lobster' prunes on the validation loss: set "
                     "config.validation_split (held out of config.train_split).")

  devices, processes = jax.device_count(), jax.process_count()
  for field in ("batch_size", "eval_batch_size"):
    size = config[field]
    if size <= 0 or size % devices or size % processes:
      raise ValueError(
          f"config.{field}={size} must be a positive multiple of the device count ({devices}) "
          f"and of the process count ({processes}).")
  if config.num_epochs <= 0:
    raise ValueError(f"config.num_epochs must be positive, got {config.num_epochs}.")


_DISTRIBUTED_INITIALIZED = False


def maybe_initialize_distributed(config: ml_collections.ConfigDict) -> None:
  """``jax.distributed.initialize()`` for multi-host runs (before any other JAX call)."""
  global _DISTRIBUTED_INITIALIZED
  if _DISTRIBUTED_INITIALIZED:
    return
  if config.distributed or os.environ.get("JAX_COORDINATOR_ADDRESS"):
    jax.distributed.initialize()
    _DISTRIBUTED_INITIALIZED = True


# --------------------------------------------------------------------------- optimizer


def create_optimizer(config: ml_collections.ConfigDict, total_steps: int,
                     steps_per_epoch: int) -> optax.GradientTransformation:
  """The whole optimizer from ``config``, in one place.

  * ``xrda``: xRDA with momentum and adaptive log-l1 (paper 000).
  * ``rda``: Xiao's RDA around the initial point (paper 001).
  * ``prox_sgd``: (momentum) SGD then soft-thresholding by λ·s.
  * ``sgd``: the dense baseline, SGD with momentum and coupled weight decay.
  * ``affine_scaling``: SGD preconditioned by ω² (re-weighted l1/l2, FOCUSS; paper 002).
  * ``lobster``: SGD with LOBSTER's shrinkage, zeros pinned (the loop prunes on plateaus).

  ``config.l1_weights="uniform"`` swaps xrda's log-l1 for plain l1 (the ablation).
  ``config.freeze_zeros_epoch`` appends :func:`sparse_optax.freeze_zeros`
  (adaptive sparse retraining: from that epoch on, zero weights stay zero).
  ``config.pruning`` appends :func:`sparse_optax.prune_by_magnitude` (Han et al. /
  Zhu & Gupta).
  """
  if config.lr_schedule == "cosine":
    learning_rate = so.cosine_decay(config.learning_rate, total_steps)
  else:
    learning_rate = config.learning_rate
  averaging = {"cosine": so.cosine_averaging(total_steps), "zero": 0.0, "one": 1.0}[
      config.averaging]
  momentum = config.momentum or None

  sgd = optax.chain(optax.add_decayed_weights(config.weight_decay),
                    optax.sgd(learning_rate, momentum=momentum, nesterov=config.nesterov))
  if config.optimizer == "xrda" and config.l1_weights == "uniform":
    if config.structure != "unstructured":
      raise ValueError("config.l1_weights='uniform' is plain l1, which has no structure; got "
                       f"config.structure={config.structure!r}.")
    tx = so.xrda(  # the ablation: every log-l1 weight replaced by 1
        learning_rate, averaging, config.l1, momentum_timescale=config.momentum_timescale,
        weight_decay=config.weight_decay, weights=so.uniform_l1_weights())
  elif config.optimizer == "xrda":
    tx = so.xrda(
        learning_rate, averaging, config.l1,
        momentum_timescale=config.momentum_timescale,
        magnitude_timescale=config.magnitude_timescale,
        maximum_factor=config.maximum_factor,
        weight_decay=config.weight_decay,
        structure=config.structure,
        accumulator_dtype=ACCUMULATOR_DTYPES[config.accumulator_dtype])
  elif config.optimizer == "rda":
    tx = so.rda(config.rda_gamma, config.l1, weight_decay=config.weight_decay)
  elif config.optimizer == "prox_sgd":
    tx = so.prox_sgd(learning_rate, config.l1, momentum=momentum, nesterov=config.nesterov,
                     weight_decay=config.weight_decay)
  elif config.optimizer == "sgd":
    tx = sgd
  elif config.optimizer == "affine_scaling":
    tx = optax.chain(
        optax.add_decayed_weights(config.weight_decay),
        so.scale_by_affine_scaling(config.affine_method, tau=config.affine_tau, p=config.affine_p,
                                   period=config.affine_period_epochs * steps_per_epoch),
        optax.sgd(learning_rate, momentum=momentum, nesterov=config.nesterov))
  elif config.optimizer == "lobster":
    tx = optax.chain(so.lobster(sgd, config.lobster_strength, mask=not_normalization),
                     so.freeze_zeros())
  else:
    raise ValueError(f"Unknown optimizer {config.optimizer!r}; valid: {', '.join(OPTIMIZERS)}.")

  if config.freeze_zeros_epoch is not None:
    tx = optax.chain(tx, so.freeze_zeros(start_step=config.freeze_zeros_epoch * steps_per_epoch))
  if config.pruning != "none":
    begin = config.pruning_begin_epoch * steps_per_epoch
    if config.pruning == "once":
      sparsity, end, frequency = config.pruning_sparsity, begin, 1
    else:
      end = config.pruning_end_epoch * steps_per_epoch
      sparsity = so.polynomial_sparsity(config.pruning_sparsity, begin, end)
      frequency = config.pruning_frequency
    tx = optax.chain(tx, so.prune_by_magnitude(sparsity, begin_step=begin, end_step=end,
                                               frequency=frequency, scope=config.pruning_scope))
  return tx


_NORMALIZATION = re.compile(r"(^|_)bn\d*$")  # the models' BatchNorm attributes: bn, bn1, stem_bn


def not_normalization(params: Any) -> Any:
  """Mask: every leaf but BatchNorm scales and shifts (LOBSTER shrinks weights and biases).

  By name, since rank cannot tell a dense bias from a BatchNorm shift.
  """
  def keep(path, _):
    return not any(_NORMALIZATION.search(str(getattr(k, "key", k))) for k in path)
  return jax.tree_util.tree_map_with_path(keep, params)


def learning_rate_at(config: ml_collections.ConfigDict, step: int, total_steps: int) -> float:
  """The learning rate of ``step`` (for logging)."""
  if config.optimizer == "rda":
    return float(so.rda_step_size(config.rda_gamma)(step))
  if config.lr_schedule == "cosine":
    return float(so.cosine_decay(config.learning_rate, total_steps)(step))
  return float(config.learning_rate)


# --------------------------------------------------------------------------- state and steps


@dataclasses.dataclass(frozen=True)
class Model:
  """The static half of an NNX model: graph definitions for training and evaluation."""
  train: nnx.GraphDef
  eval: nnx.GraphDef


def _to_pure(state: nnx.State) -> dict:
  return nnx.to_pure_dict(state)


def create_train_state(config: ml_collections.ConfigDict, info, tx: optax.GradientTransformation,
                       ) -> tuple[Model, dict[str, Any]]:
  """Builds the model (from ``config.seed``) and the train state, a dict of pure pytrees.

  The optimizer only sees ``nnx.Param`` leaves; BatchNorm running statistics are
  kept apart (``batch_stats``) and updated by the forward pass.
  """
  model = models.get_model(
      config.model, info.num_classes, input_shape=tuple(info.image_shape),
      init=config.init, init_scale=config.init_scale, rngs=nnx.Rngs(config.seed))
  model.train()
  graphdef, params, batch_stats = nnx.split(model, nnx.Param, nnx.BatchStat)
  model.eval()
  eval_graphdef = nnx.graphdef(model)
  params, batch_stats = _to_pure(params), _to_pure(batch_stats)
  state = {
      "step": jnp.zeros([], jnp.int32),
      "params": params,
      "batch_stats": batch_stats,
      "opt_state": tx.init(params),
  }
  return Model(train=graphdef, eval=eval_graphdef), state


def _cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  return optax.softmax_cross_entropy_with_integer_labels(logits, labels)


def train_step(model: Model, tx: optax.GradientTransformation, state: dict[str, Any],
               batch: Batch) -> tuple[dict[str, Any], dict[str, jax.Array]]:
  """One optimizer step on a (global) batch; returns the new state and batch metrics."""

  def loss_fn(params):
    module = nnx.merge(model.train, params, state["batch_stats"])
    logits = module(batch["image"])
    loss = jnp.mean(_cross_entropy(logits, batch["label"]))
    return loss, (logits, _to_pure(nnx.state(module, nnx.BatchStat)))

  (loss, (logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
      state["params"])
  updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
  params = optax.apply_updates(state["params"], updates)
  new_state = {"step": state["step"] + 1, "params": params, "batch_stats": batch_stats,
               "opt_state": opt_state}
  metrics = {
      "loss": loss,
      "accuracy": jnp.mean(jnp.argmax(logits, -1) == batch["label"]),
  }
  return new_state, metrics


def eval_step(model: Model, state: dict[str, Any], batch: Batch) -> dict[str, jax.Array]:
  """Sums of loss and correct predictions over the real (``mask``) examples of a batch."""
  module = nnx.merge(model.eval, state["params"], state["batch_stats"])
  logits = module(batch["image"])
  mask = batch["mask"]
  return {
      "loss": jnp.sum(_cross_entropy(logits, batch["label"]) * mask),
      "correct": jnp.sum((jnp.argmax(logits, -1) == batch["label"]) * mask),
      "count": jnp.sum(mask),
  }


# --------------------------------------------------------------------------- data


def _global_batch(batch: Batch, sharding: NamedSharding) -> dict[str, jax.Array]:
  """Per-process numpy batch → global array sharded along the ``data`` axis."""
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
          for k, v in batch.items()}


def _padded_eval_batches(batches: Iterator[Batch], local_batch_size: int,
                         num_batches: int) -> Iterator[dict[str, np.ndarray]]:
  """Exactly ``num_batches`` batches of ``local_batch_size``, padded, with a 0/1 ``mask``.

  Every process yields the same number of equally shaped batches (needed for the
  collective eval step), whatever the size of its shard of the eval split.
  """
  template = None
  for _ in range(num_batches):
    batch = next(batches, None)
    if batch is None:
      if template is None:
        raise ValueError("The eval split is empty.")
      batch = {k: v[:0] for k, v in template.items()}
    batch = {k: np.asarray(v) for k, v in batch.items() if k in ("image", "label")}
    template = batch
    n = batch["label"].shape[0]
    if n > local_batch_size:
      raise ValueError(f"Eval batch of {n} examples, more than the per-process {local_batch_size}.")
    pad = local_batch_size - n
    out = {k: np.concatenate([v, np.zeros((pad, *v.shape[1:]), v.dtype)]) for k, v in batch.items()}
    out["mask"] = np.concatenate([np.ones(n, np.float32), np.zeros(pad, np.float32)])
    yield out


# --------------------------------------------------------------------------- logging


class _SummaryWriter:
  """TensorBoard scalars through ``tf.summary.write`` (works without the ``tensorboard`` package)."""

  def __init__(self, logdir: str):
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    self._tf = tf
    self._writer = tf.summary.create_file_writer(logdir)
    self._metadata = tf.compat.v1.SummaryMetadata(
        plugin_data=tf.compat.v1.SummaryMetadata.PluginData(plugin_name="scalars"))

  def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
    with self._writer.as_default():
      for name, value in scalars.items():
        self._tf.summary.write(name, self._tf.constant(float(value), self._tf.float32),
                               step=step, metadata=self._metadata)

  def flush(self) -> None:
    self._writer.flush()

  def close(self) -> None:
    self._writer.close()


class _NullWriter:
  def write_scalars(self, step, scalars):
    del step, scalars

  def flush(self):
    pass

  def close(self):
    pass


def create_writer(workdir: str, is_chief: bool):
  """clu's default writer (TensorBoard + logging); without ``tensorboard`` installed,
  which clu's writers import, TensorBoard event files written by TF directly."""
  try:
    from clu import metric_writers  # pylint: disable=g-import-not-at-top
  except ImportError:
    return _SummaryWriter(workdir) if is_chief else _NullWriter()
  return metric_writers.create_default_writer(workdir, just_logging=not is_chief)


def _to_python(tree):
  def convert(x):
    x = np.asarray(x)
    return x.item() if x.ndim == 0 else x.tolist()
  return jax.tree.map(convert, tree)


def _scalars_for_tensorboard(record: Mapping[str, Any]) -> dict[str, float]:
  scalars = {k: v for k, v in record.items()
             if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "epoch"}
  for layer, stats in record.get("layers", {}).items():
    scalars[f"layer_density/{layer}"] = stats["density"]
  return scalars


def _format_record(record: Mapping[str, Any]) -> str:
  return (f"epoch {record['epoch']:4d}  step {record['step']:7d}  "
          f"train loss {record['train_loss']:.4f} acc {record['train_accuracy']:.4f}  "
          f"test loss {record['test_loss']:.4f} acc {record['test_accuracy']:.4f}  "
          f"density {record['density']:.4f} compression {record['compression']:.1f}x  "
          f"zero kernels {record['zero_kernels']}/{record['kernels']} "
          f"channels {record['zero_channels']}/{record['channels']}  "
          f"({record['epoch_time_s']:.0f}s)")


# --------------------------------------------------------------------------- main loop


def _save(manager: ocp.CheckpointManager, state: dict[str, Any]) -> None:
  step = int(jax.device_get(state["step"]))
  if manager.latest_step() != step:
    manager.save(step, args=ocp.args.StandardSave(state))
  manager.wait_until_finished()


# Fields that may change between a run and its resumption: where data comes from and how the
# run is shown or kept, not what is trained.
RESUMABLE_CHANGES = frozenset({"data_dir", "prepare_data", "progress_bar", "distributed",
                               "max_checkpoints_to_keep", "eval_batch_size"})


def check_same_run(config: ml_collections.ConfigDict, workdir: Path) -> None:
  """Raises ``ValueError`` when ``workdir`` holds checkpoints of a different config.

  Resuming them would silently mix two runs (e.g. a new learning rate on top of a state that
  diverged under the old one); only the fields in ``RESUMABLE_CHANGES`` may differ.
  """
  saved_path, checkpoints = workdir / "config.json", workdir / "checkpoints"
  if not (saved_path.exists() and checkpoints.is_dir()
          and any(p.name.isdigit() for p in checkpoints.iterdir())):
    return
  saved = json.loads(saved_path.read_text())
  current = json.loads(config.to_json_best_effort())
  changed = sorted(k for k in set(saved) | set(current)
                   if k not in RESUMABLE_CHANGES and saved.get(k) != current.get(k))
  if changed:
    diff = ", ".join(f"{k}: {saved.get(k)!r} -> {current.get(k)!r}" for k in changed)
    raise ValueError(f"{workdir} holds checkpoints of a different config ({diff}). Resuming "
                     "would mix two runs: use a new workdir, or delete this one to start over.")


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
  maybe_initialize_distributed(config)
  validate_config(config)
  workdir = Path(workdir).resolve()
  workdir.mkdir(parents=True, exist_ok=True)
  is_chief = jax.process_index() == 0
  check_same_run(config, workdir)
  if is_chief:
    (workdir / "config.json").write_text(config.to_json_best_effort(indent=2) + "\n")

  # Data.
  if config.prepare_data:
    prepare_data.maybe_prepare(config.dataset, config.data_dir)
  info = input_pipeline.get_info(config.dataset, data_dir=config.data_dir,
                                 train_split=config.train_split, eval_split=config.eval_split)
  steps_per_epoch = info.num_train // config.batch_size
  if steps_per_epoch == 0:
    raise ValueError(f"config.batch_size={config.batch_size} exceeds the {info.num_train} "
                     f"training examples of {config.dataset}.")
  total_steps = config.num_epochs * steps_per_epoch
  # Every process runs the same number of eval steps: enough for the largest shard.
  local_eval_batch = config.eval_batch_size // jax.process_count()

  def steps_for(num_examples: int) -> int:
    return math.ceil(math.ceil(num_examples / jax.process_count()) / local_eval_batch)

  eval_steps = {config.eval_split: steps_for(info.num_test)}
  if config.validation_split is not None:
    eval_steps[config.validation_split] = steps_for(input_pipeline.get_info(
        config.dataset, data_dir=config.data_dir, eval_split=config.validation_split).num_test)

  # Model, optimizer, state; replicated over a 1-D data mesh.
  mesh = jax.make_mesh((jax.device_count(),), ("data",),
                       axis_types=(jax.sharding.AxisType.Auto,))
  replicated, data_sharding = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))
  tx = create_optimizer(config, total_steps, steps_per_epoch)
  model, state = create_train_state(config, info, tx)
  state = jax.device_put(state, replicated)

  manager = ocp.CheckpointManager(
      workdir / "checkpoints",
      options=ocp.CheckpointManagerOptions(max_to_keep=config.max_checkpoints_to_keep,
                                           create=True))
  if manager.latest_step() is not None:
    target = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
    state = manager.restore(manager.latest_step(), args=ocp.args.StandardRestore(target))
    logging.info("Resumed from step %d in %s", int(state["step"]), workdir)
  step = int(jax.device_get(state["step"]))

  p_train_step = jax.jit(functools.partial(train_step, model, tx),
                         in_shardings=(replicated, data_sharding),
                         out_shardings=(replicated, replicated))
  p_eval_step = jax.jit(functools.partial(eval_step, model),
                        in_shardings=(replicated, data_sharding), out_shardings=replicated)
  p_sparsity = jax.jit(so.sparsity_summary, in_shardings=replicated, out_shardings=replicated)
  # On CPU, several queued steps with collectives over fake devices can deadlock:
  # wait for each step (cheap there: nothing runs ahead on a CPU anyway).
  block_each_step = jax.default_backend() == "cpu"

  writer = create_writer(str(workdir), is_chief)
  show_bar = config.progress_bar and is_chief and sys.stdout.isatty()
  record: dict[str, Any] = {}

  def eval_split(state, split: str) -> tuple[float, float]:
    """(mean loss, accuracy) of ``state`` on ``split``."""
    sums = {"loss": 0.0, "correct": 0.0, "count": 0.0}
    batches = input_pipeline.create_split(
        config.dataset, split, config.eval_batch_size, train=False,
        seed=config.seed, data_dir=config.data_dir, drop_remainder=False)
    for batch in _padded_eval_batches(iter(batches), local_eval_batch, eval_steps[split]):
      out = p_eval_step(state, _global_batch(batch, data_sharding))
      if block_each_step:
        jax.block_until_ready(out)
      sums = jax.tree.map(lambda a, b: a + b, sums, out)
    sums = _to_python(sums)
    return sums["loss"] / sums["count"], sums["correct"] / sums["count"]

  def evaluate(state, epoch: int, train_metrics: Sequence[Mapping[str, jax.Array]],
               epoch_time: float) -> dict[str, Any]:
    test_loss, test_accuracy = eval_split(state, config.eval_split)
    validation = {}
    if config.validation_split is not None:
      validation = dict(zip(("val_loss", "val_accuracy"),
                            eval_split(state, config.validation_split)))
    sparsity = _to_python(p_sparsity(state["params"]))
    train = _to_python(train_metrics)
    step = int(jax.device_get(state["step"]))
    return {
        "epoch": epoch,
        "step": step,
        "learning_rate": learning_rate_at(config, max(step - 1, 0), total_steps),
        "train_loss": float(np.mean([m["loss"] for m in train])) if train else float("nan"),
        "train_accuracy": float(np.mean([m["accuracy"] for m in train])) if train else float("nan"),
        "test_loss": test_loss,
        "test_accuracy": test_accuracy,
        **validation,
        "density": sparsity["density"],
        "compression": sparsity["compression"],
        "nonzeros": sparsity["nonzeros"],
        "total": sparsity["total"],
        "kernels": sparsity["kernels"],
        "zero_kernels": sparsity["zero_kernels"],
        "channels": sparsity["channels"],
        "zero_channels": sparsity["zero_channels"],
        "epoch_time_s": epoch_time,
        "layers": sparsity["layers"],
    }

  def log(record: dict[str, Any]) -> None:
    if is_chief:
      with open(workdir / "metrics.jsonl", "a") as f:
        f.write(json.dumps(record) + "\n")
    writer.write_scalars(record["step"], _scalars_for_tensorboard(record))
    writer.flush()
    if is_chief:
      print(_format_record(record), flush=True)

  plateau = None
  if config.optimizer == "lobster":
    plateau = lobster.PlateauDetector(config.lobster_patience)
    if is_chief and (workdir / "metrics.jsonl").exists():  # resume the detector as it was
      lines = (workdir / "metrics.jsonl").read_text().splitlines()
      if lines and "lobster" in json.loads(lines[-1]):
        last = json.loads(lines[-1])["lobster"]
        plateau.best, plateau.epochs_without_improvement = last["best"], last["waiting"]

  def lobster_phase(state, record: dict[str, Any], train_metrics) -> tuple[dict, dict]:
    """LOBSTER's pruning phase when the validation loss has plateaued (SPEC §4).

    Pruned weights are zeroed here and pinned by the optimizer's freeze_zeros; the
    epoch's record then describes the pruned model.
    """
    if plateau.update(record["val_loss"]):
      _, params, info = lobster.bisect_threshold(
          state["params"], lambda p: eval_split({**state, "params": p}, config.validation_split)[0],
          config.lobster_tolerance)
      state = {**state, "params": jax.device_put(params, replicated)}
      plateau.reset()
      record = {**evaluate(state, record["epoch"], train_metrics, record["epoch_time_s"]),
                "lobster_pruned": info}
    record["lobster"] = {"best": plateau.best, "waiting": plateau.epochs_without_improvement}
    return state, record

  try:
    first_epoch = step // steps_per_epoch
    for epoch in range(first_epoch, config.num_epochs):
      start = time.time()
      skip = step - epoch * steps_per_epoch  # batches of this epoch consumed before a restart
      batches = input_pipeline.create_split(
          config.dataset, config.train_split, config.batch_size, train=True, epoch=epoch,
          seed=config.seed, data_dir=config.data_dir, drop_remainder=True)
      batches = itertools.islice(batches, skip, steps_per_epoch)
      bar = None
      if show_bar:
        import tqdm  # pylint: disable=g-import-not-at-top
        bar = tqdm.tqdm(total=steps_per_epoch, initial=skip, leave=False, dynamic_ncols=True,
                        desc=f"epoch {epoch + 1}/{config.num_epochs}")
      train_metrics = []
      for batch in batches:
        state, metrics = p_train_step(state, _global_batch(batch, data_sharding))
        if block_each_step:
          jax.block_until_ready(metrics)
        train_metrics.append(metrics)
        step += 1
        if bar is not None:
          bar.update()
          if step % 20 == 0:
            bar.set_postfix(loss=f"{float(metrics['loss']):.4f}")
        for hook in hooks:
          hook(step)
      if bar is not None:
        bar.close()
      if step != (epoch + 1) * steps_per_epoch:
        raise RuntimeError(f"Epoch {epoch} of {config.dataset} gave {step - epoch * steps_per_epoch}"
                           f" batches of {config.batch_size}, expected {steps_per_epoch}.")
      record = evaluate(state, epoch + 1, train_metrics, time.time() - start)
      if not math.isfinite(record["train_loss"]):
        # Keep the last good checkpoint: a NaN state is not worth resuming from.
        step_size = (f"raise config.rda_gamma (now {config.rda_gamma}): the first step is 1/γ"
                     if config.optimizer == "rda" else
                     f"lower config.learning_rate (now {config.learning_rate})")
        raise FloatingPointError(
            f"Training diverged in epoch {epoch + 1}: the train loss is {record['train_loss']}. "
            f"To fix, {step_size}, or wrap the optimizer in optax.apply_if_finite.")
      if plateau is not None:
        state, record = lobster_phase(state, record, train_metrics)
      log(record)
      _save(manager, state)
  except KeyboardInterrupt:
    _save(manager, state)
    logging.warning("Interrupted: checkpoint of step %d saved in %s; rerun to resume.",
                    int(jax.device_get(state["step"])), workdir)
    raise

  if not record:  # already trained: a rerun of a finished run only evaluates
    record = evaluate(state, config.num_epochs, [], 0.0)
  manager.close()
  writer.close()
  if is_chief:
    print(f"Final: test accuracy {record['test_accuracy']:.4f}, density {record['density']:.4f}"
          f" ({record['nonzeros']}/{record['total']} non-zeros), "
          f"compression {record['compression']:.1f}x", flush=True)
  return record
