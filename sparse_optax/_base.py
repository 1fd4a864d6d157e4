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
    layout: how state built from the weights (:func:`accumulated_threshold`'s
      running sum) is stored. ``"params"``: every weight has its param's shape
      (or is a scalar outside the penalised leaves); the sum is stored like the
      params and shards like them under ``optax.tree.map_params``.
      ``"scalar"``: every weight is 0 or 1 and never changes; the sum is one
      scalar. ``"packed"`` (any other weights): one 1-D buffer, which
      ``map_params`` leaves out.
  """

  init: Callable[[Params], WeightingState]
  update: Callable[[WeightingState, Params], tuple[Params, WeightingState]]
  layout: str = "packed"


def pack(arrays: list[jax.Array], dtype) -> jax.Array:
  """Arrays of any shapes as one 1-D buffer (see :func:`unpack`).

  Per-leaf state whose arrays do not have their params' shapes (per kernel, per
  channel) is kept in one buffer: its tree structure does not depend on the
  params, so ``optax.tree.map_params`` leaves it out instead of handing it the
  params' shardings (a params-shaped tree would get the wrong shapes).
  """
  if not arrays:
    return jnp.zeros((0,), dtype)
  return jnp.concatenate([jnp.ravel(a).astype(dtype) for a in arrays])


def unpack(who: str, buffer: jax.Array, shapes: list[tuple[int, ...]], dtypes: list
           ) -> list[jax.Array]:
  """The arrays :func:`pack` stored, given their shapes and dtypes."""
  sizes = [math.prod(shape) for shape in shapes]
  if buffer.shape != (sum(sizes),):
    raise ValueError(
        f"{who}: params do not match the tree the state was initialised with (the state "
        f"holds {buffer.shape[0] if buffer.ndim == 1 else buffer.shape} values, these params "
        f"need {sum(sizes)}).")
  out, start = [], 0
  for shape, size, dtype in zip(shapes, sizes, dtypes):
    out.append(buffer[start:start + size].reshape(shape).astype(dtype))
    start += size
  return out


def state_dtype(params: Params):
  """One dtype for a packed buffer: the widest floating dtype of the params (float32 if none)."""
  dtypes = [x.dtype for x in jax.tree.leaves(params) if hasattr(x, "dtype")]
  return jnp.result_type(*dtypes) if dtypes else jnp.float32


Mask = Any  # a tree of bools (the params' structure, or a prefix of it), or params -> that


def default_mask(params: Params) -> Params:
  """Leaves with ``ndim >= 2`` (conv and linear kernels), not biases or normalisation scales."""
  return jax.tree.map(lambda x: jnp.ndim(x) >= 2, params)


def broadcast_prefix(who: str, what: str, prefix: Any, params: Params) -> Any:
  """``prefix`` (the params' structure, or a prefix of it) with each value copied to its leaves."""
  try:
    return jax.tree.map(lambda value, sub: jax.tree.map(lambda _: value, sub), prefix, params)
  except (ValueError, TypeError) as e:
    raise ValueError(
        f"{who}: the {what} does not match the params tree (it must have the params' "
        f"structure, or a prefix of it):\n  {what}: {jax.tree.structure(prefix)}\n"
        f"  params: {jax.tree.structure(params)}") from e


def resolve_mask(who: str, mask: Mask | None, params: Params) -> Params:
  """``mask`` as a tree of Python bools with the structure of ``params``.

  The mask decides the state's shapes, so it must be concrete: Python or NumPy
  bools, never traced values. A prefix tree applies each bool to its subtree.
  """
  if isinstance(mask, (jax.Array, jax.core.Tracer)):
    # optax.inject_hyperparams takes a callable for a schedule and hands its value on.
    raise TypeError(
        f"{who}: mask is an array ({mask!r}), not a tree of bools or a callable. Under "
        "optax.inject_hyperparams, name a callable mask in static_args=('mask',).")
  if not jax.tree.leaves(params):  # empty tree, or optax.tree.map_params's placeholder
    return jax.tree.map(lambda _: True, params)
  if isinstance(mask, (bool, np.bool_)) and jax.tree.structure(params).num_nodes > 1:
    # Under optax.inject_hyperparams a callable mask is evaluated on the step count, which
    # turns a rank rule into one bool for every leaf: refuse rather than mask everything.
    raise TypeError(
        f"{who}: mask is a single bool ({mask!r}) for a tree of params; give a tree of bools "
        "or a callable. Under optax.inject_hyperparams, name a callable mask in "
        "static_args=('mask',).")
  tree = default_mask(params) if mask is None else mask(params) if callable(mask) else mask
  tree = broadcast_prefix(who, "mask", tree, params)

  def to_bool(path, m):
    if isinstance(m, jax.core.Tracer) or not (
        isinstance(m, (bool, np.bool_)) or (getattr(m, "dtype", None) == np.bool_
                                          and np.ndim(m) == 0)):
      raise TypeError(
          f"{who}: mask leaf {jax.tree_util.keystr(path)} is {m!r}; the mask must hold "
          "Python bools (it decides the state's shapes, so it cannot be traced)."
      )
    return bool(m)

  return jax.tree_util.tree_map_with_path(to_bool, tree)


def check_step(name: str, value: Any, *, minimum: int = 0) -> None:
  """An int step count >= ``minimum``; traced values (``inject_hyperparams``) pass."""
  if isinstance(value, jax.core.Tracer):
    return
  integral = isinstance(value, (int, np.integer)) or (
      hasattr(value, "dtype") and np.ndim(value) == 0
      and np.issubdtype(np.dtype(value.dtype), np.integer))
  if isinstance(value, (bool, np.bool_)) or not integral:
    raise TypeError(f"{name} must be an int; got {value!r}.")
  if int(value) < minimum:
    raise ValueError(f"{name} must be an int >= {minimum}; got {value!r}.")


def check_dtype(name: str, value: Any) -> None:
  """``None`` or a dtype; an array means inject_hyperparams took a dtype for a schedule."""
  if value is None:
    return
  if isinstance(value, (jax.Array, np.ndarray, jax.core.Tracer)):
    raise TypeError(
        f"{name} is an array ({value!r}), not a dtype. Under optax.inject_hyperparams, name it "
        f"in static_args=({name!r},).")
  try:
    jnp.dtype(value)
  except TypeError:
    raise TypeError(f"{name} must be a dtype such as jnp.bfloat16; got {value!r}.") from None


def is_concrete(*values: Any) -> bool:
  """No value is traced (Python checks on them are possible)."""
  return not any(isinstance(v, jax.core.Tracer) for v in values)


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


def path_name(path) -> str:
  """A leaf's path as ``conv1/kernel``: dict keys, attribute names and indices."""
  parts = []
  for key in path:
    for attr in ("key", "name", "idx"):
      if hasattr(key, attr):
        parts.append(str(getattr(key, attr)))
        break
    else:
      parts.append(str(key))
  return "/".join(parts)


def leaf_name(path) -> str:
  """``path_name`` for messages (``(root)`` for a bare array)."""
  return path_name(path) or "(root)"


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
