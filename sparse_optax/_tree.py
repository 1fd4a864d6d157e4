"""Tree plumbing the transforms share: packed state buffers, copies, sizes, leaf names, and
hyper-parameter values at a step."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import optax

from sparse_optax import _checks
from sparse_optax._types import Params


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


def unpack(buffer: jax.Array, shapes: list[tuple[int, ...]], dtypes: list) -> list[jax.Array]:
  """The arrays :func:`pack` stored, given their shapes and dtypes."""
  sizes = [math.prod(shape) for shape in shapes]
  _checks.check_packed(buffer, sum(sizes))
  out, start = [], 0
  for shape, size, dtype in zip(shapes, sizes, dtypes):
    out.append(buffer[start:start + size].reshape(shape).astype(dtype))
    start += size
  return out


def state_dtype(params: Params):
  """One dtype for a packed buffer: the widest floating dtype of the params (float32 if none)."""
  dtypes = [x.dtype for x in jax.tree.leaves(params) if hasattr(x, "dtype")]
  return jnp.result_type(*dtypes) if dtypes else jnp.float32


def value_at(x: optax.ScalarOrSchedule, count: jax.Array) -> jax.Array:
  """The value of a float or schedule at optax step ``count``."""
  return jnp.asarray(x(count) if callable(x) else x)


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


def copy_tree(tree: Params) -> Params:
  """A copy that never aliases ``tree`` (so params and state can both be donated)."""
  return jax.tree.map(lambda x: jnp.array(x, copy=True), tree)


def tree_size(tree: Params) -> int:
  return sum(math.prod(jnp.shape(x)) for x in jax.tree.leaves(tree))
