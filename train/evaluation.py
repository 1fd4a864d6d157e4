"""Each epoch's record: test (and validation) loss and accuracy, sparsity, train metrics.

A language model's loss and accuracy are per-token means (next-token cross-entropy and
top-1 accuracy); its record adds ``train_perplexity``, ``test_perplexity`` and (with a
validation split) ``val_perplexity``, each ``exp`` of the mean token loss."""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from typing import Any

import jax
import ml_collections
import numpy as np
from jax.sharding import NamedSharding

import models
import sparse_optax as so
from train import input_pipeline, methods, steps
from train.reporting import to_python


def weight_kurtosis(params: Any) -> list[jax.Array | None]:
  """Per leaf, in leaf order: E[((W - mean) / std)^4] of each weight matrix or kernel (None for
  vectors). Fedorov & Rao (2018) track it over their re-weighting iterations: 3 for a Gaussian,
  higher as the weights concentrate at zero with heavy tails; NaN for a constant leaf."""
  def kurtosis(x):
    if x.ndim < 2:
      return None
    z = (x - x.mean()) / x.std()
    return (z ** 4).mean()
  return [kurtosis(x) for x in jax.tree.leaves(params)]


class Evaluator:
  """Evaluates train states on the eval (and validation) split, with every process running the
  same number of equally shaped, padded batches (the eval step is collective)."""

  def __init__(self, config: ml_collections.ConfigDict, info, model: steps.Model,
               state_shardings: Any, data_sharding: NamedSharding, total_steps: int):
    self.config, self.total_steps = config, total_steps
    self.data_sharding, self.state_shardings = data_sharding, state_shardings
    self.local_batch = config.eval_batch_size // jax.process_count()
    self.num_batches = {config.eval_split: self._batches_for(info.num_test)}
    if config.validation_split is not None:
      self.num_batches[config.validation_split] = self._batches_for(input_pipeline.get_info(
          config.dataset, data_dir=config.data_dir, eval_split=config.validation_split).num_test)
    replicated = NamedSharding(data_sharding.mesh, jax.sharding.PartitionSpec())
    self._eval_step = jax.jit(functools.partial(steps.eval_step, model),
                              in_shardings=(state_shardings, data_sharding),
                              out_shardings=replicated)
    self._sparsity = jax.jit(so.sparsity_summary, in_shardings=(state_shardings["params"],),
                             out_shardings=replicated)
    self._kurtosis = jax.jit(weight_kurtosis, in_shardings=(state_shardings["params"],),
                             out_shardings=replicated)
    # A Transformer's heads and neurons: how many died whole (every penalised weight zero).
    groups = models.group_structure(config.model)
    self._groups = None if groups is None else jax.jit(
        functools.partial(so.group_sparsity, structure=groups,
                          mask=models.penalty_mask(config.model)),
        in_shardings=(state_shardings["params"],), out_shardings=replicated)
    # On CPU, several queued steps with collectives over fake devices can deadlock. One device
    # has no collectives: there the loop only keeps one step queued, so that the next batch is
    # read while this step computes (LeNet-300-100: 2.0 s an epoch instead of 2.8).
    self.block_each_step = jax.default_backend() == "cpu" and jax.device_count() > 1

  def _batches_for(self, num_examples: int) -> int:
    return math.ceil(math.ceil(num_examples / jax.process_count()) / self.local_batch)

  def loss_and_accuracy(self, state: Mapping[str, Any], split: str) -> tuple[float, float]:
    config = self.config
    sums = {"loss": 0.0, "correct": 0.0, "count": 0.0}
    batches = input_pipeline.create_split(
        config.dataset, split, config.eval_batch_size, train=False,
        seed=config.seed, data_dir=config.data_dir, drop_remainder=False)
    for batch in steps.padded_eval_batches(iter(batches), self.local_batch,
                                           self.num_batches[split]):
      out = self._eval_step(state, steps.global_batch(batch, self.data_sharding))
      if self.block_each_step:
        jax.block_until_ready(out)
      sums = jax.tree.map(lambda a, b: a + b, sums, out)
    sums = to_python(sums)
    return sums["loss"] / sums["count"], sums["correct"] / sums["count"]

  def record(self, state: Mapping[str, Any], epoch: int, epoch_time: float) -> dict[str, Any]:
    """The epoch's record; train loss and accuracy average the epoch's steps (NaN if none)."""
    config = self.config
    test_loss, test_accuracy = self.loss_and_accuracy(state, config.eval_split)
    validation = {}
    if config.validation_split is not None:
      validation = dict(zip(("val_loss", "val_accuracy"),
                            self.loss_and_accuracy(state, config.validation_split)))
    sparsity = to_python(self._sparsity(state["params"]))
    for stats, kurtosis in zip(sparsity["layers"].values(),
                               to_python(self._kurtosis(state["params"]))):
      if kurtosis is not None:
        stats["kurtosis"] = kurtosis
    with np.errstate(invalid="ignore", divide="ignore"):
      train = to_python(state["train_metrics"].compute())
    step = int(jax.device_get(state["step"]))
    target = {}
    found = so.target_state(state["opt_state"])
    if found is not None:  # λ of the last step, and the penalised weights' density it left
      lam, dens = to_python(found.l1), to_python(found.density)
      target = {"l1": lam[0] if len(lam) == 1 else lam,
                "l1_density": dens[0] if len(dens) == 1 else dens,
                "l1_solves": int(to_python(found.solves))}
    groups = {}
    if self._groups is not None:  # per group set (a block's heads, its neurons): dead / all
      found = to_python(self._groups(state["params"]))
      groups = {"dead_groups": {name: {"groups": v["groups"], "zero": v["zero_groups"]}
                                for name, v in found["sets"].items()}}
    perplexity = {}
    if input_pipeline.spec(config.dataset).text:  # a language model: exp(mean token loss)
      losses = {"train": float(train["loss"]), "test": test_loss,
                "val": validation.get("val_loss")}
      with np.errstate(over="ignore", invalid="ignore"):
        perplexity = {f"{split}_perplexity": float(np.exp(loss))
                      for split, loss in losses.items() if loss is not None}
    return {
        "epoch": epoch,
        "step": step,
        "learning_rate": methods.learning_rate_at(config, max(step - 1, 0), self.total_steps),
        "train_loss": float(train["loss"]),
        "train_accuracy": float(train["accuracy"]),
        "test_loss": test_loss,
        "test_accuracy": test_accuracy,
        **validation,
        **perplexity,
        **target,
        **groups,
        **{k: sparsity[k] for k in ("density", "compression", "nonzeros", "total", "kernels",
                                    "zero_kernels", "channels", "zero_channels")},
        "epoch_time_s": epoch_time,
        "layers": sparsity["layers"],
    }


class CallbackView:
  """What an epoch-end callback may ask of the loop, for candidate params of ``state``."""

  def __init__(self, evaluator: Evaluator, state: Mapping[str, Any], epoch: int,
               epoch_time: float):
    self._evaluator, self._state = evaluator, state
    self._epoch, self._epoch_time = epoch, epoch_time

  def _with(self, params: Any) -> dict[str, Any]:
    return {**self._state,
            "params": jax.device_put(params, self._evaluator.state_shardings["params"])}

  def validation_loss(self, params: Any) -> float:
    return self._evaluator.loss_and_accuracy(self._with(params),
                                             self._evaluator.config.validation_split)[0]

  def record(self, params: Any) -> dict[str, Any]:
    return self._evaluator.record(self._with(params), self._epoch, self._epoch_time)
