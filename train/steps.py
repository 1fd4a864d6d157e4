"""The model's train state, the jitted train and eval steps, and how batches reach them.

The train state is a dict of pure pytrees: ``step``, ``params`` (the ``nnx.Param`` leaves, all
the optimizer sees), ``batch_stats`` (BatchNorm running statistics, updated by the forward
pass), ``opt_state``, ``train_metrics`` (the epoch's running averages, a clu metrics
collection: checkpointed, so an epoch cut by a restart still averages all its steps) and
``callbacks`` (the epoch-end callbacks' own state).
"""

import dataclasses
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from clu import metrics as clu_metrics
from flax import nnx, struct
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

import models

Batch = Mapping[str, Any]
SHARDINGS = ("replicated", "fsdp")


@struct.dataclass
class TrainMetrics(clu_metrics.Collection):
  """The epoch's averages over its train steps, accumulated on device."""
  loss: clu_metrics.Average.from_output("loss")
  accuracy: clu_metrics.Average.from_output("accuracy")


@dataclasses.dataclass(frozen=True)
class Model:
  """The static half of an NNX model: graph definitions for training and evaluation."""
  train: nnx.GraphDef
  eval: nnx.GraphDef


def build_model(config: Mapping[str, Any], num_classes: int, image_shape: Sequence[int], *,
                rngs: nnx.Rngs) -> nnx.Module:
  """The config's model (``model``, ``init``, ``init_scale``) for a dataset's classes and image
  shape: the one construction that the loop and a restored run (``train.run_folder``) share."""
  return models.get_model(config["model"], num_classes, input_shape=tuple(image_shape),
                          init=config.get("init", "normal"),
                          init_scale=config.get("init_scale", 1.0), rngs=rngs)


def create_train_state(config: ml_collections.ConfigDict, info, tx: optax.GradientTransformation,
                       callbacks: Mapping[str, Any] | None = None,
                       ) -> tuple[Model, dict[str, Any]]:
  """Builds the model (from ``config.seed``) and the train state."""
  model = build_model(config, info.num_classes, info.image_shape, rngs=nnx.Rngs(config.seed))
  model.train()
  graphdef, params, batch_stats = nnx.split(model, nnx.Param, nnx.BatchStat)
  model.eval()
  eval_graphdef = nnx.graphdef(model)
  params, batch_stats = nnx.to_pure_dict(params), nnx.to_pure_dict(batch_stats)
  state = {
      "step": jnp.zeros([], jnp.int32),
      "params": params,
      "batch_stats": batch_stats,
      "opt_state": tx.init(params),
      "train_metrics": TrainMetrics.empty(),
  }
  if callbacks:
    state["callbacks"] = dict(callbacks)
  return Model(train=graphdef, eval=eval_graphdef), state


# The keys of a batch's model input: an image batch's, or a text batch's token windows.
INPUT_KEYS = ("image", "tokens")


def model_input(batch: Batch) -> jax.Array:
  """The batch's model input: ``image`` ``[B, H, W, C]``, or ``tokens`` ``[B, T]``."""
  return batch["tokens"] if "tokens" in batch else batch["image"]


def _cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  return optax.softmax_cross_entropy_with_integer_labels(logits, labels)


def train_step(model: Model, tx: optax.GradientTransformation, state: dict[str, Any],
               batch: Batch) -> tuple[dict[str, Any], dict[str, jax.Array]]:
  """One optimizer step on a (global) batch; returns the new state and batch metrics."""

  def loss_fn(params):
    module = nnx.merge(model.train, params, state["batch_stats"])
    logits = module(model_input(batch))
    loss = jnp.mean(_cross_entropy(logits, batch["label"]))
    return loss, (logits, nnx.to_pure_dict(nnx.state(module, nnx.BatchStat)))

  (loss, (logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
      state["params"])
  updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
  params = optax.apply_updates(state["params"], updates)
  metrics = {
      "loss": loss,
      "accuracy": jnp.mean(jnp.argmax(logits, -1) == batch["label"]),
  }
  new_state = {**state, "step": state["step"] + 1, "params": params,
               "batch_stats": batch_stats, "opt_state": opt_state,
               "train_metrics": state["train_metrics"].merge(
                   TrainMetrics.single_from_model_output(**metrics))}
  return new_state, metrics


def eval_step(model: Model, state: dict[str, Any], batch: Batch) -> dict[str, jax.Array]:
  """Sums of loss and correct predictions over the real (``mask``) examples of a batch (of an
  example's mean over its tokens, for a language model)."""
  module = nnx.merge(model.eval, state["params"], state["batch_stats"])
  logits = module(model_input(batch))
  mask = batch["mask"]
  # A language model's loss and accuracy are means over an example's tokens (all examples have
  # the same length, so the sums over examples divided by the count are per-token means).
  per_example = lambda x: jnp.mean(x.reshape(x.shape[0], -1), axis=1)
  return {
      "loss": jnp.sum(per_example(_cross_entropy(logits, batch["label"])) * mask),
      "correct": jnp.sum(per_example(jnp.argmax(logits, -1) == batch["label"]) * mask),
      "count": jnp.sum(mask),
  }


# --------------------------------------------------------------------------- placement


def fsdp_axis(shape: tuple[int, ...], num_devices: int) -> int | None:
  """The axis ``fsdp`` splits a leaf along: its largest axis that ``num_devices`` divides (the
  first of equals); ``None`` (replicated) when none does."""
  axes = [a for a, size in enumerate(shape) if size >= num_devices and size % num_devices == 0]
  return max(axes, key=lambda a: (shape[a], -a)) if axes else None


def leaf_sharding(mesh: Mesh, shape: tuple[int, ...], mode: str) -> NamedSharding:
  """``replicated``, or ``fsdp``: split along :func:`fsdp_axis` of the ``data`` axis."""
  if mode not in SHARDINGS:
    raise ValueError(f"Unknown sharding {mode!r} (config.sharding); valid: {', '.join(SHARDINGS)}.")
  axis = fsdp_axis(shape, mesh.shape["data"]) if mode == "fsdp" else None
  if axis is None:
    return NamedSharding(mesh, P())
  return NamedSharding(mesh, P(*[("data" if a == axis else None) for a in range(len(shape))]))


def state_shardings(state: Any, mesh: Mesh, mode: str) -> Any:
  """A sharding for every leaf of ``state`` (params and optimizer state alike, by shape)."""
  return jax.tree.map(lambda x: leaf_sharding(mesh, np.shape(x), mode), state)


def global_batch(batch: Batch, sharding: NamedSharding) -> dict[str, jax.Array]:
  """Per-process numpy batch → global array sharded along the ``data`` axis."""
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
          for k, v in batch.items()}


def padded_eval_batches(batches: Iterator[Batch], local_batch_size: int,
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
    batch = {k: np.asarray(v) for k, v in batch.items() if k in (*INPUT_KEYS, "label")}
    template = batch
    n = batch["label"].shape[0]
    if n > local_batch_size:
      raise ValueError(f"Eval batch of {n} examples, more than the per-process {local_batch_size}.")
    pad = local_batch_size - n
    out = {k: np.concatenate([v, np.zeros((pad, *v.shape[1:]), v.dtype)]) for k, v in batch.items()}
    out["mask"] = np.concatenate([np.ones(n, np.float32), np.zeros(pad, np.float32)])
    yield out
