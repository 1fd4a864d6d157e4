"""l1 weights: uniform, and the adaptive log-l1 reweighting (unstructured, kernel, channel)."""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from sparse_optax import _checks
from sparse_optax import _tree
from sparse_optax import _types

STRUCTURES = ("unstructured", "kernel", "channel")
KERNEL_LAYOUTS = ("HWIO", "OIHW")


def conv_axes(shape: tuple[int, ...], kernel_layout: str, where: str = "a leaf"
              ) -> tuple[tuple[int, ...], int, int]:
  """(spatial axes, input-channel axis, output-channel axis) of a conv kernel.

  ``"HWIO"`` (Flax, Haiku, TensorFlow): spatial axes first, then in, out.
  ``"OIHW"`` (PyTorch, Equinox): out, in, then the spatial axes. Any number of
  spatial axes (1-D, 2-D, 3-D convolutions).
  """
  if kernel_layout not in KERNEL_LAYOUTS:
    raise ValueError(f"kernel_layout must be one of {KERNEL_LAYOUTS}; got {kernel_layout!r}.")
  ndim = len(shape)
  if ndim < 3:
    raise ValueError(
        f"{where} has shape {tuple(shape)}, which is not a conv kernel in {kernel_layout} "
        "layout (that needs at least one spatial axis besides in and out: ndim >= 3). Give "
        "it the 'unstructured' structure.")
  if kernel_layout == "HWIO":
    return tuple(range(ndim - 2)), ndim - 2, ndim - 1
  return tuple(range(2, ndim)), 1, 0


def _reduced_axes(shape: tuple[int, ...], structure: str | None, kernel_layout: str,
                  where: str) -> tuple[int, ...] | None:
  """Axes a leaf's magnitude is averaged over; None for leaves without l1."""
  if structure is None:
    return None  # outside the mask: biases, BatchNorm scales and shifts by default
  if structure not in STRUCTURES:
    raise ValueError(f"{where}: structure must be one of {STRUCTURES}; got {structure!r}.")
  if structure == "unstructured":
    return ()
  spatial, inputs, _ = conv_axes(shape, kernel_layout, where)
  if structure == "kernel":
    return spatial  # each (in, out) kernel
  return tuple(sorted((*spatial, inputs)))  # each output channel


def leaf_structures(structure: Any, params: Any, mask: Any) -> list:
  """Per leaf (flattened order): its structure, or None outside the mask.

  A string gives 4-D leaves (2-D convolutions) that structure and every other
  leaf ``"unstructured"``; a tree or callable names each leaf's structure, so
  1-D and 3-D convolutions are structured only when the user says so.
  """
  leaves = jax.tree.leaves(params)
  selected = jax.tree.leaves(_checks.resolve_mask(mask, params))
  if isinstance(structure, str):
    per_leaf = [structure if x.ndim == 4 else "unstructured" for x in leaves]
  else:
    tree = structure(params) if callable(structure) else structure
    per_leaf = jax.tree.leaves(_checks.broadcast_prefix("structure tree", tree, params))
  return [st if m else None for st, m in zip(per_leaf, selected)]


def _weight_shape(shape: tuple[int, ...], axes: tuple[int, ...] | None):
  if axes is None:
    return ()
  return tuple(1 if i in axes else d for i, d in enumerate(shape))


def _mean_magnitude(x: jax.Array, axes: tuple[int, ...]) -> jax.Array:
  """Mean of |x| over ``axes``, keeping dims."""
  if not axes:
    return jnp.abs(x)
  k = len(axes)
  count = math.prod(x.shape[i] for i in axes)
  if axes == tuple(range(k)) and k < x.ndim and count <= 64:
    # A sum of the leading slices (HWIO kernels): XLA:CPU reduces over leading axes ~50x slower.
    flat = jnp.abs(x).reshape(count, *x.shape[k:])
    total = flat[0]
    for i in range(1, count):
      total = total + flat[i]
    return (total / count).reshape((1,) * k + x.shape[k:])
  return jnp.mean(jnp.abs(x), axis=axes, keepdims=True)


@_checks.names_errors
def uniform_l1_weights(mask: _types.Mask | None = None) -> _types.Weighting:
  r"""Plain l1: weight 1 on the leaves in ``mask`` (default: ``ndim >= 2``), 0 elsewhere.

  The weights are one scalar per leaf, so a threshold accumulated from them
  costs no parameter-sized state.

  Args:
    mask: a tree of bools with the params' structure (or a prefix of it), or a
      callable ``params -> tree``, selecting the penalised leaves. Default: leaves
      with ``ndim >= 2`` (kernels, not biases or normalisation scales).

  Example:
    >>> import jax.numpy as jnp, sparse_optax as so
    >>> w = so.uniform_l1_weights()
    >>> params = {"b": jnp.zeros(3), "w": jnp.ones((2, 3))}
    >>> weights, _ = w.update(w.init(params), params)
    >>> weights
    {'b': Array(0., dtype=float32), 'w': Array(1., dtype=float32)}
  """

  def init_fn(params):
    _checks.check_float_params(params)
    _checks.resolve_mask(mask, params)
    return ()

  def update_fn(state, params):
    selected = _checks.resolve_mask(mask, params)
    weights = jax.tree.map(lambda x, m: jnp.asarray(1.0 if m else 0.0, x.dtype), params, selected)
    return weights, state

  return _types.Weighting(init_fn, update_fn, layout="scalar")


class LogL1WeightsState(NamedTuple):
  count: jax.Array  # int32
  # The running average r: like the params in unstructured mode (zeros outside the mask);
  # in kernel/channel mode one packed buffer of the reduced shapes (see _tree.pack).
  magnitude: Any


@_checks.names_errors
def log_l1_weights(
    learning_rate: optax.ScalarOrSchedule,
    timescale: optax.ScalarOrSchedule,
    *,
    maximum_factor: optax.ScalarOrSchedule | None = None,
    beta: optax.ScalarOrSchedule | None = None,
    structure: Any = "unstructured",
    kernel_layout: str = "HWIO",
    mask: _types.Mask | None = None,
    accumulator_dtype: Any | None = None,
) -> _types.Weighting:
  r"""Adaptive log-l1 reweighting of Siegel, Chen & Xu (2020), per leaf.

  .. math::
    \mu' = e^{-s_n/T_b}, \quad r \leftarrow \mu' r + (1-\mu')\,\mathrm{mag}(\theta_n), \quad
    w = \frac{c\,F}{1 + (F-1)\, r/\max r}

  with :math:`F = (\beta+1)/\beta` the maximum factor: a weight that is on
  average zero gets :math:`cF`, the largest one :math:`c`. :math:`w` is the
  derivative of the log penalty :math:`M\log(\beta + |\theta|/M)` (times
  :math:`\beta + 1`), evaluated at a running average of the magnitudes.

  * ``"unstructured"``: :math:`\mathrm{mag} = |\theta|`, :math:`c = 1`.
  * ``"kernel"`` (conv kernels): mean :math:`|\theta|` over each (in, out)
    kernel's spatial axes :math:`H \times W`, :math:`c = \sqrt{HW}`; whole
    kernels vanish.
  * ``"channel"`` (conv kernels): mean over :math:`H, W, I` of each output
    channel, :math:`c = \sqrt{HWI}`; whole filters vanish.

  A string ``structure`` applies to 4-D leaves (2-D convolutions); every other
  leaf is unstructured. A tree of structure names with the params' structure
  (or a prefix), or a callable ``params -> tree``, chooses per leaf, which is
  how 1-D and 3-D convolutions (ndim 3 and 5) are structured: nothing is
  guessed from the rank. ``kernel_layout`` says how conv kernels are stored:
  ``"HWIO"`` (Flax, Haiku) or ``"OIHW"`` (PyTorch, Equinox).

  Other leaves in ``mask`` use the unstructured rule; leaves outside it (by
  default those with ``ndim < 2``: biases, BatchNorm) get :math:`w = 0`, as
  does a leaf whose running magnitude is all zero. Kernel and channel weights
  keep the reduced shape (size-1 axes), broadcasting against the leaf.

  Args:
    learning_rate: step size :math:`s_n` (float or schedule).
    timescale: :math:`T_b > 0` of the magnitude average.
    maximum_factor: :math:`F \ge 1` (default 500; 1 is plain l1). Give this or
      ``beta``, not both.
    beta: :math:`\beta > 0`, i.e. :math:`F = (\beta+1)/\beta`.
    structure: ``"unstructured"``, ``"kernel"`` or ``"channel"``, or a tree or
      callable naming each leaf's structure.
    kernel_layout: ``"HWIO"`` or ``"OIHW"``.
    mask: the penalised leaves, as in :func:`uniform_l1_weights` (default
      ``ndim >= 2``).
    accumulator_dtype: dtype the running average :math:`r` is stored in
      (default: the params'); the weights keep the params' dtype.

  Returns:
    A :class:`Weighting`.

  Example:
    >>> import jax.numpy as jnp, sparse_optax as so
    >>> w = so.log_l1_weights(1.0, 1.0, maximum_factor=3.0)
    >>> params = {"w": jnp.array([[0.0, 1.0, 2.0]])}
    >>> weights, _ = w.update(w.init(params), params)
    >>> weights["w"]  # 3 / (1 + 2 r / max r)
    Array([[3. , 1.5, 1. ]], dtype=float32)

  References:
    Siegel, Chen, Xu, Training Sparse Neural Networks using Compressed Sensing, 2020.
  """
  if isinstance(structure, str) and structure not in STRUCTURES:
    raise ValueError(f"structure must be one of {STRUCTURES}; got {structure!r}.")
  if kernel_layout not in KERNEL_LAYOUTS:
    raise ValueError(f"kernel_layout must be one of {KERNEL_LAYOUTS}; got {kernel_layout!r}.")
  _checks.check_dtype("accumulator_dtype", accumulator_dtype)
  if beta is not None and maximum_factor is not None:
    raise ValueError(
        "Give either beta or maximum_factor, not both (maximum_factor = (beta + 1) / beta)."
    )
  _checks.check_hparam("learning_rate", learning_rate)
  _checks.check_hparam("timescale", timescale, positive=True)
  if beta is not None:
    _checks.check_hparam("beta", beta, positive=True)
  else:
    maximum_factor = 500.0 if maximum_factor is None else maximum_factor
    _checks.check_hparam("maximum_factor", maximum_factor)  # and >= 1, below
    if not callable(maximum_factor) and not isinstance(maximum_factor, jax.core.Tracer):
      if np.min(np.asarray(maximum_factor, np.float64)) < 1.0:
        raise ValueError(f"maximum_factor must be >= 1; got {maximum_factor!r}.")

  unstructured = isinstance(structure, str) and structure == "unstructured"

  def axes_of(params) -> list:
    """Per leaf (flattened order): the averaged axes, None outside the mask."""
    structures = leaf_structures(structure, params, mask)
    return [_reduced_axes(x.shape, st, kernel_layout,
                          f"{_checks.caller()}: leaf {_tree.leaf_name(p)}")
            for (p, x), st in zip(jax.tree_util.tree_leaves_with_path(params), structures)]

  def init_fn(params):
    _checks.check_float_params(params)
    leaves, _ = jax.tree.flatten(params)
    axes = axes_of(params)
    if unstructured:  # r has each param's shape, so it shards like the params
      return LogL1WeightsState(jnp.zeros([], jnp.int32),
                               optax.tree.zeros_like(params, dtype=accumulator_dtype))
    magnitude = _tree.pack([jnp.zeros(_weight_shape(x.shape, a)) for x, a in zip(leaves, axes)],
                           accumulator_dtype or _tree.state_dtype(params))
    return LogL1WeightsState(jnp.zeros([], jnp.int32), magnitude)

  def update_fn(state, params):
    _checks.require_params(params)
    leaves, treedef = jax.tree.flatten(params)
    axes = axes_of(params)
    if unstructured:
      _checks.check_tree_match("params", params, state.magnitude, shapes=False)
      r_leaves = jax.tree.leaves(state.magnitude)
    else:
      r_leaves = _tree.unpack(state.magnitude,
                              [_weight_shape(x.shape, a) for x, a in zip(leaves, axes)],
                              [accumulator_dtype or x.dtype for x in leaves])
    s = _tree.value_at(learning_rate, state.count)
    mu = jnp.exp(-s / _tree.value_at(timescale, state.count))
    if beta is not None:
      b = _tree.value_at(beta, state.count)
      factor = (b + 1) / b
    else:
      factor = _tree.value_at(maximum_factor, state.count)

    def leaf(x, r, axes):
      if axes is None:
        return jnp.zeros((), x.dtype), r
      stored = r.dtype
      m = mu.astype(jnp.promote_types(stored, x.dtype))
      mag = _mean_magnitude(x, axes)
      r = m * r + (1 - m) * mag
      c = math.sqrt(math.prod(x.shape[i] for i in axes))  # √(HW) kernel, √(HWI) channel
      rmax = jnp.max(r)
      f = factor.astype(x.dtype)
      w = c * f / (1 + (f - 1) * r / jnp.where(rmax > 0, rmax, 1))
      return jnp.where(rmax > 0, w, 0).astype(x.dtype), r.astype(stored)

    pairs = [leaf(x, r, a) for x, r, a in zip(leaves, r_leaves, axes)]
    weights = treedef.unflatten([w for w, _ in pairs])
    magnitude = [r for _, r in pairs]
    magnitude = (treedef.unflatten(magnitude) if unstructured
                 else _tree.pack(magnitude, state.magnitude.dtype))
    return weights, LogL1WeightsState(optax.safe_increment(state.count), magnitude)

  return _types.Weighting(init_fn, update_fn, layout="params" if unstructured else "packed")
