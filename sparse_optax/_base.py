"""Shared pieces: the `Weighting` protocol, hyper-parameter checks, tree checks."""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

Params = Any
WeightingState = Any


class Weighting(NamedTuple):
  """A stateful map from params to a tree of non-negative per-element weights.

  It is how a threshold reaches :func:`soft_threshold`: ``update`` returns one
  array per leaf, of the leaf's shape or broadcastable to it (same rank, size-1
  axes), so that per-kernel and per-channel weights cost no parameter-sized
  buffer.

  Attributes:
    init: ``params -> state``.
    update: ``(state, params) -> (weights, new_state)``.
  """

  init: Callable[[Params], WeightingState]
  update: Callable[[WeightingState, Params], tuple[Params, WeightingState]]


def value_at(x: optax.ScalarOrSchedule, count: jax.Array) -> jax.Array:
  """The value of a float or schedule at optax step ``count``."""
  return jnp.asarray(x(count) if callable(x) else x)


def check_hparam(
    name: str,
    value: Any,
    *,
    positive: bool = False,
    at_most_one: bool = False,
    allow_schedule: bool = True,
) -> None:
  """Rejects strings, bools, NaN, inf, negative (or non-positive) or out-of-range numbers.

  Schedules and traced values (inside ``jit`` or ``inject_hyperparams``) can
  only be checked where they are evaluated, so they pass through.
  """
  if value is None or isinstance(value, (str, bytes, bool, np.bool_)) or (
      hasattr(value, "dtype") and np.dtype(value.dtype) == np.bool_):
    # np.asarray("0.1" or None, float) and float(True) would succeed: a typo would train.
    raise TypeError(f"{name} must be a number, a jax.Array or a schedule; got {value!r}.")
  if callable(value):
    if not allow_schedule:
      raise TypeError(f"{name} must be a number, not a schedule; got {value!r}.")
    return
  if isinstance(value, jax.core.Tracer):
    return
  try:
    arr = np.asarray(value, dtype=np.float64)
  except (TypeError, ValueError):
    raise TypeError(
        f"{name} must be a number, a jax.Array or a schedule; got {value!r}."
    ) from None
  if np.any(np.isnan(arr)):
    raise ValueError(f"{name} must not be NaN; got {value!r}.")
  if np.any(np.isinf(arr)):
    raise ValueError(f"{name} must be finite; got {value!r}.")
  if positive and np.any(arr <= 0):
    raise ValueError(f"{name} must be positive; got {value!r}.")
  if np.any(arr < 0):
    raise ValueError(f"{name} must be non-negative; got {value!r}.")
  if at_most_one and np.any(arr > 1):
    raise ValueError(f"{name} must lie in [0, 1]; got {value!r}.")


def check_float_params(who: str, params: Params) -> None:
  """Raises ``TypeError`` naming the first leaf of ``params`` that is not floating point.

  Integer or bool params would be silently truncated (every update rounds to 0); Python
  numbers have no dtype or shape for the per-leaf state.
  """
  for path, x in jax.tree_util.tree_leaves_with_path(params):
    dtype = getattr(x, "dtype", None)
    if dtype is None or not jnp.issubdtype(dtype, jnp.floating):
      kind = f"dtype {dtype}" if dtype is not None else f"type {type(x).__name__}, not an array"
      raise TypeError(
          f"{who}: params leaf {jax.tree_util.keystr(path) or '(root)'} has {kind}; "
          "only floating-point arrays can be trained. Convert it, or keep it out of the "
          "optimizer (optax.masked, optax.multi_transform)."
      )


def require_params(params: Params | None, who: str) -> None:
  if params is None:
    raise ValueError(
        f"{who} needs the current params: call `tx.update(updates, state, params)`."
    )


def check_tree_match(
    who: str, name: str, tree: Any, reference: Any, *, shapes: bool = True
) -> None:
  """Raises a clear error when ``tree`` does not have ``reference``'s structure (and shapes)."""
  t_def, r_def = jax.tree.structure(tree), jax.tree.structure(reference)
  if t_def != r_def:
    raise ValueError(
        f"{who}: {name} do not match the tree the state was initialised with.\n"
        f"  got:      {t_def}\n  expected: {r_def}"
    )
  if not shapes:
    return
  for (path, a), b in zip(
      jax.tree_util.tree_leaves_with_path(tree), jax.tree.leaves(reference)
  ):
    if jnp.shape(a) != jnp.shape(b):
      raise ValueError(
          f"{who}: {name} leaf {jax.tree_util.keystr(path)} has shape "
          f"{jnp.shape(a)}, but the state was initialised with {jnp.shape(b)}."
      )


def copy_tree(tree: Params) -> Params:
  """A copy that never aliases ``tree`` (so params and state can both be donated)."""
  return jax.tree.map(lambda x: jnp.array(x, copy=True), tree)


def tree_size(tree: Params) -> int:
  return sum(math.prod(jnp.shape(x)) for x in jax.tree.leaves(tree))
