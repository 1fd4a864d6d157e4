"""The config's checks, run before anything else: a mistake is a clear error, not a late crash."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from typing import Any

import jax
import ml_collections

import models
import sparse_optax as so
from train import input_pipeline, methods, steps


def _flatten_keys(config: Mapping[str, Any], prefix: str = "") -> set[str]:
  keys = set()
  for key, value in config.items():
    if isinstance(value, (ml_collections.ConfigDict, dict)):
      keys |= _flatten_keys(value, f"{prefix}{key}.")
    else:
      keys.add(f"{prefix}{key}")
  return keys


def _check_nm_pattern(config: ml_collections.ConfigDict) -> None:
  """config.nm_pattern: "N:M" with 1 <= N <= M, for a method that holds it."""
  text = config.nm_pattern
  parts = text.split(":") if isinstance(text, str) else []
  if len(parts) != 2 or not all(p.strip().isdigit() for p in parts) or not (
      1 <= int(parts[0]) <= int(parts[1])):
    raise ValueError(f"config.nm_pattern must be 'N:M' with 1 <= N <= M (at most N non-zeros "
                     f"in each group of M), e.g. '2:4'; got {text!r}.")
  if config.optimizer not in methods.L1_METHODS and config.pruning == "none":
    raise ValueError(
        f"config.nm_pattern is held by the prox of {', '.join(methods.L1_METHODS)} and by "
        f"pruning (config.pruning 'once' or 'gradual'); config.optimizer is "
        f"{config.optimizer!r} without pruning. RigL and SET move a mask of fixed size per "
        "layer and have no N:M mode: add pruning, or use an l1 method.")


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
  check_name("dataset", config.dataset, input_pipeline.DATASETS)
  check_name("optimizer", config.optimizer, methods.METHODS)
  check_name("lr_schedule", config.lr_schedule, methods.LR_SCHEDULES)
  check_name("averaging", config.averaging, methods.AVERAGINGS)
  check_name("structure", config.structure, methods.STRUCTURES)
  if config.structure == "groups":
    methods.structure(config)  # refuses a model without heads and neurons
  check_name("accumulator_dtype", config.accumulator_dtype, methods.ACCUMULATOR_DTYPES)
  check_name("init", config.init, models.INITS)
  check_name("l1_weights", config.l1_weights, methods.L1_WEIGHTS)
  check_name("pruning", config.pruning, methods.PRUNINGS)
  check_name("pruning_scope", config.pruning_scope, so.PRUNING_SCOPES)
  check_name("affine_method", config.affine_method, so.AFFINE_SCALING_METHODS)
  check_name("sharding", config.sharding, steps.SHARDINGS)
  check_name("dst_distribution", config.dst_distribution, so.DISTRIBUTIONS)
  check_name("l1_sparsity_scope", config.l1_sparsity_scope, so.TARGET_SCOPES)
  if config.l1_sparsity is not None:
    if config.optimizer not in methods.L1_METHODS:
      raise ValueError(f"config.l1_sparsity is a target for the l1 methods "
                       f"({', '.join(methods.L1_METHODS)}); config.optimizer is "
                       f"{config.optimizer!r}. Pruning and RigL/SET take theirs in "
                       "pruning_sparsity and dst_sparsity.")
    if not 0 <= config.l1_sparsity < 1:
      raise ValueError(f"config.l1_sparsity must lie in [0, 1); got {config.l1_sparsity}.")
    if config.l1_sparsity_end_epoch and (
        config.l1_sparsity_end_epoch <= config.l1_sparsity_begin_epoch):
      raise ValueError("config.l1_sparsity_end_epoch must be after l1_sparsity_begin_epoch (or "
                       f"0: no ramp); got {config.l1_sparsity_begin_epoch} and "
                       f"{config.l1_sparsity_end_epoch}.")
    if max(config.l1_sparsity_begin_epoch, config.l1_sparsity_end_epoch) > config.num_epochs:
      raise ValueError("config.l1_sparsity's ramp ends after the run (num_epochs="
                       f"{config.num_epochs}); the target would never be reached.")
    if config.l1_solve_every < 0:
      raise ValueError(f"config.l1_solve_every must be >= 0; got {config.l1_solve_every}.")
  if config.nm_pattern is not None:
    _check_nm_pattern(config)
  for field in ("dst_sparsity", "dst_end_fraction", "dst_drop_fraction"):
    if not 0 <= config[field] <= 1:
      raise ValueError(f"config.{field} must lie in [0, 1]; got {config[field]}.")
  if config.dst_update_steps < 1:
    raise ValueError(f"config.dst_update_steps must be >= 1; got {config.dst_update_steps}.")
  if not isinstance(config.warmup_steps, int) or config.warmup_steps < 0:
    raise ValueError(f"config.warmup_steps must be an int >= 0 (0: no warmup); got "
                     f"{config.warmup_steps!r}.")
  if config.checkpoint_every_steps < 0:
    raise ValueError("config.checkpoint_every_steps must be >= 0 (0: at epoch ends only); got "
                     f"{config.checkpoint_every_steps}.")
  if not config.affine_greedy and (config.affine_leafwise or config.affine_iterations is not None):
    raise ValueError("config.affine_leafwise and config.affine_iterations apply to the greedy "
                     "refresh only: set config.affine_greedy=True.")
  if config.affine_iterations is not None and config.affine_iterations < 0:
    raise ValueError(f"config.affine_iterations must be >= 0; got {config.affine_iterations}.")
  if config.pruning == "gradual" and config.pruning_end_epoch <= config.pruning_begin_epoch:
    raise ValueError("config.pruning='gradual' needs pruning_end_epoch > pruning_begin_epoch; got "
                     f"{config.pruning_begin_epoch} and {config.pruning_end_epoch}.")
  method = methods.METHODS[config.optimizer]
  if method.needs_validation and config.validation_split is None:
    raise ValueError(f"config.optimizer={config.optimizer!r} decides on the validation loss: "
                     "set config.validation_split (held out of config.train_split).")

  devices, processes = jax.device_count(), jax.process_count()
  for field in ("batch_size", "eval_batch_size"):
    size = config[field]
    if size <= 0 or size % devices or size % processes:
      raise ValueError(
          f"config.{field}={size} must be a positive multiple of the device count ({devices}) "
          f"and of the process count ({processes}).")
  if config.num_epochs <= 0:
    raise ValueError(f"config.num_epochs must be positive, got {config.num_epochs}.")
