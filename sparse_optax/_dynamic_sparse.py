"""Sparse training from scratch: RigL and SET (a fixed-size mask that moves), ERK densities."""

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

DISTRIBUTIONS = ("uniform", "erk")


def erk_densities(shapes: list[tuple[int, ...]], density: Any,
                  dense: list[bool] | None = None) -> list[jax.Array]:
  r"""Erdős–Rényi-Kernel layer densities for an overall ``density`` (Evci et al. 2020).

  Layer :math:`l` of shape :math:`(n_1, \dots, n_k)` gets
  :math:`d_l = \min(1, \varepsilon \sum_i n_i / \prod_i n_i)`, with :math:`\varepsilon` chosen
  so that :math:`\sum_l d_l |l| = d \sum_l |l|`; layers that would exceed 1 are dense and
  the others rescaled. Leaves flagged in ``dense`` are dense and count against the budget.
  ``density`` may be traced (a schedule's value).

  Example:
    >>> import sparse_optax as so
    >>> [round(float(d), 4) for d in so.erk_densities([(784, 300), (300, 100), (100, 10)], 0.1)]
    [0.0796, 0.2302, 1.0]
  """
  if dense is None:
    dense = [False] * len(shapes)
  sizes = jnp.array([math.prod(s) for s in shapes], jnp.float32)
  raw = jnp.array([sum(s) / max(math.prod(s), 1) for s in shapes], jnp.float32)
  forced = jnp.array(dense, bool)
  budget = jnp.asarray(density, jnp.float32) * sizes.sum()
  full = forced
  for _ in range(len(shapes)):  # each pass makes at least one more layer dense, or none
    free = jnp.where(full, 0.0, sizes * raw).sum()
    eps = (budget - jnp.where(full, sizes, 0.0).sum()) / jnp.where(free > 0, free, 1.0)
    full = full | (eps * raw >= 1.0)
  return list(jnp.where(full, 1.0, jnp.clip(eps * raw, 0.0, 1.0)))


def _is_shape(x: Any) -> bool:
  return x is None or (type(x) is tuple and all(  # (not a NamedTuple such as optax.MaskedNode)
      isinstance(d, (int, np.integer)) and not isinstance(d, bool) for d in x))


def erk_shapes_of(erk_shapes: Any, params: Any) -> list[tuple[int, ...]]:
  """Per flattened leaf, the shape ERK reads it as: its own, or the one ``erk_shapes`` gives
  (checked to be the leaf's size)."""
  paths_leaves = jax.tree_util.tree_leaves_with_path(params)
  own = [tuple(np.shape(x)) for _, x in paths_leaves]
  if erk_shapes is None or not own:
    return own
  tree = erk_shapes(params) if callable(erk_shapes) else erk_shapes
  if any(isinstance(x, (jax.Array, jax.core.Tracer)) for x in jax.tree.leaves(tree)):
    raise TypeError(f"{_checks.caller()}: erk_shapes holds arrays; under "
                    "optax.inject_hyperparams, name it in static_args=('erk_shapes',).")
  try:
    given = jax.tree.structure(params).flatten_up_to(tree)
  except (ValueError, TypeError):
    given = None
  if given is None or not all(_is_shape(g) for g in given):
    raise ValueError(f"{_checks.caller()}: erk_shapes must have the params' structure with a "
                     f"tuple of ints (or None) per leaf (under optax.inject_hyperparams a "
                     f"callable is taken for a schedule: name it in static_args):\n  erk_shapes: "
                     f"{tree!r}\n  params: {jax.tree.structure(params)}")
  out = []
  for (path, _), shape, view in zip(paths_leaves, own, given):
    if view is not None and math.prod(view) != math.prod(shape):
      raise ValueError(f"{_checks.caller()}: erk_shapes gives leaf {_tree.leaf_name(path)!r} of "
                       f"shape {shape} the shape {tuple(view)}, of another size "
                       f"({math.prod(view)} against {math.prod(shape)}): it must be a reshape.")
    out.append(shape if view is None else tuple(int(d) for d in view))
  return out


def check_erk_shapes(erk_shapes: Any, erk: bool, needs: str) -> None:
  """Refuses ``erk_shapes`` where no ERK spread reads them."""
  if erk_shapes is not None and not erk:
    raise ValueError(f"{_checks.caller()}: erk_shapes says how ERK reads each leaf, and only "
                     f"{needs} reads them.")


def layer_densities(params: Any, sparsity: Any, distribution: str, selected: Any,
                    dense: Any | None = None, erk_shapes: Any = None) -> Any:
  """A tree with each selected leaf's density (``1 - sparsity`` spread by ``distribution``).

  ``"uniform"``: every selected leaf at ``1 - sparsity`` but those in ``dense`` (a tree of
  bools; None: none), at 1 (RigL's uniform: the overall density ends a little above the
  target). ``"erk"``: see :func:`erk_densities`. Unselected leaves get 1.

  ``erk_shapes`` are the shapes ERK reads the leaves as (its sum of dimensions over their
  product): a tree of tuples with the params' structure (None: the leaf's own shape) or a
  callable ``params -> tree``, each the size of its leaf. Evci et al. count a dense layer's
  fan-in and fan-out, so an attention kernel stored ``(in, heads, head_dim)`` (Flax's
  ``MultiHeadAttention``) is ``(in, heads * head_dim)`` to them, not three dimensions; its
  output kernel ``(heads, head_dim, out)`` is ``(heads * head_dim, out)``. Default: each leaf's
  own shape (as jaxpruner reads it). Under ``optax.inject_hyperparams``, name ``erk_shapes`` in
  ``static_args`` (a callable would be taken for a schedule).

  Example:
    >>> import jax.numpy as jnp, sparse_optax as so
    >>> params = {"query": jnp.ones((64, 4, 16)), "mlp": jnp.ones((64, 256))}
    >>> sel = {"query": True, "mlp": True}
    >>> {k: round(float(d), 3) for k, d in so.layer_densities(params, 0.9, "erk", sel).items()}
    {'mlp': 0.099, 'query': 0.104}
    >>> as_matrix = {"query": (64, 64), "mlp": None}
    >>> {k: round(float(d), 3) for k, d in so.layer_densities(
    ...     params, 0.9, "erk", sel, erk_shapes=as_matrix).items()}
    {'mlp': 0.089, 'query': 0.143}
  """
  if distribution not in DISTRIBUTIONS:
    raise ValueError(f"distribution must be one of {DISTRIBUTIONS}; got {distribution!r}.")
  leaves, treedef = jax.tree.flatten(params)
  sel = jax.tree.leaves(selected)
  den = [False] * len(leaves) if dense is None else jax.tree.leaves(dense)
  target = 1.0 - jnp.asarray(sparsity, jnp.float32)
  out = [jnp.ones([], jnp.float32)] * len(leaves)
  idx = [i for i, s in enumerate(sel) if s]
  if distribution == "uniform":
    for i in idx:
      out[i] = jnp.ones([], jnp.float32) if den[i] else target
  elif idx:
    shapes = erk_shapes_of(erk_shapes, params)
    erk = erk_densities([shapes[i] for i in idx], target, [den[i] for i in idx])
    for i, d in zip(idx, erk):
      out[i] = d
  return jax.tree.unflatten(treedef, out)


def _ranks(scores: jax.Array) -> jax.Array:
  """Each element's rank in ascending order of ``scores`` (ties by position)."""
  flat = scores.reshape(-1)
  order = jnp.argsort(flat, stable=True)
  return jnp.zeros(flat.shape, jnp.int32).at[order].set(
      jnp.arange(flat.size, dtype=jnp.int32)).reshape(scores.shape)


def _random_mask(key: jax.Array, shape: tuple[int, ...], density: jax.Array) -> jax.Array:
  """Exactly ``round(density * size)`` True elements, uniformly at random."""
  n = math.prod(shape)
  active = jnp.round(density * n).astype(jnp.int32)
  return _ranks(jax.random.uniform(key, shape)) < active


class DynamicSparseState(NamedTuple):
  count: jax.Array  # int32
  keep: optax.Params  # bool, each param's shape: True where the weight is active
  inner: Any


def _restart_grown(state: Any, params: optax.Params, grown: optax.Params) -> Any:
  """Zeros the grown weights' entries in every params-shaped part of an optimizer state (a
  momentum trace, Adam's moments), as jaxpruner restarts them: a weight grown back would
  otherwise resume with the momentum it had when dropped."""
  structure = jax.tree.structure(params)
  shapes = [jnp.shape(x) for x in jax.tree.leaves(params)]

  def params_like(x):
    return (not isinstance(x, (optax.EmptyState, type(None)))
            and jax.tree.structure(x) == structure
            and [jnp.shape(v) for v in jax.tree.leaves(x)] == shapes)

  def restart(x):
    if not params_like(x):
      return x
    return jax.tree.map(lambda v, g: jnp.where(g, jnp.zeros_like(v), v), x, grown)

  return jax.tree.map(restart, state, is_leaf=params_like)


def _dynamic_sparse(
    grow: str, inner: optax.GradientTransformation, sparsity: Any, *,
    update_frequency: int, end_step: int, drop_fraction: Any, distribution: str,
    dense: _types.Mask | None, mask: _types.Mask | None, seed: int, erk_shapes: Any,
) -> optax.GradientTransformationExtraArgs:
  _checks.check_hparam("sparsity", sparsity, at_most_one=True, allow_schedule=False)
  _checks.check_hparam("drop_fraction", drop_fraction, at_most_one=True, allow_schedule=False)
  _checks.check_step("update_frequency", update_frequency, minimum=1)
  _checks.check_step("end_step", end_step)
  _checks.check_step("seed", seed)
  if distribution not in DISTRIBUTIONS:
    raise ValueError(f"{_checks.caller()}: distribution must be one of {DISTRIBUTIONS}; got "
                     f"{distribution!r}.")
  check_erk_shapes(erk_shapes, distribution == "erk", 'distribution="erk"')
  inner = optax.with_extra_args_support(inner)

  def init_fn(params):
    _checks.check_float_params(params)
    selected = _checks.resolve_mask(mask, params)
    kept_dense = None if dense is None else _checks.resolve_mask(dense, params)
    densities = layer_densities(params, sparsity, distribution, selected, kept_dense,
                                erk_shapes)
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.PRNGKey(seed), max(len(leaves), 1))
    keep = [_random_mask(k, x.shape, d) if s else jnp.ones(x.shape, bool)
            for k, x, d, s in zip(keys, leaves, jax.tree.leaves(densities),
                                  jax.tree.leaves(selected))]
    return DynamicSparseState(jnp.zeros([], jnp.int32), jax.tree.unflatten(treedef, keep),
                              inner.init(params))

  def regrow(key, stepped, grads, keep, fraction, selected):
    leaves, treedef = jax.tree.flatten(keep)
    keys = jax.random.split(key, max(len(leaves), 1))

    def leaf(k, p, g, m, sel):
      if not sel:
        return m
      n_drop = jnp.floor(fraction * m.sum()).astype(jnp.int32)
      # Drop the active weights of least magnitude after this step.
      dropped = _ranks(jnp.where(m, jnp.abs(p), jnp.inf)) < n_drop
      survivors = m & ~dropped
      # Grow as many among the rest: largest dense gradient (RigL) or at random (SET).
      score = jnp.abs(g) if grow == "gradient" else jax.random.uniform(k, m.shape)
      grown = _ranks(jnp.where(survivors, jnp.inf, -score.astype(jnp.float32))) < n_drop
      return survivors | grown

    return jax.tree.unflatten(treedef, [
        leaf(k, p, g, m, s) for k, p, g, m, s in zip(
            keys, jax.tree.leaves(stepped), jax.tree.leaves(grads), leaves,
            jax.tree.leaves(selected))])

  def update_fn(updates, state, params=None, **extra_args):
    _checks.require_params(params)
    _checks.check_tree_match("updates", updates, params)
    _checks.check_tree_match("params", params, state.keep)
    selected = _checks.resolve_mask(mask, params)
    t = state.count
    masked = jax.tree.map(lambda g, m: jnp.where(m, g, 0).astype(g.dtype), updates, state.keep)
    u, inner_state = inner.update(masked, state.inner, params, **extra_args)
    due = (t > 0) & (t % update_frequency == 0) & (t < end_step)
    fraction = 0.5 * jnp.asarray(drop_fraction, jnp.float32) * (
        1 + jnp.cos(jnp.pi * t / jnp.maximum(end_step, 1)))
    stepped = jax.tree.map(lambda p, x: p + x, params, u)
    key = jax.random.fold_in(jax.random.PRNGKey(seed), t)
    keep = jax.lax.cond(due, lambda: regrow(key, stepped, updates, state.keep, fraction,
                                             selected), lambda: state.keep)
    # Active before and after: the inner step. Dropped, inactive or newly grown: zero.
    out = jax.tree.map(
        lambda p, x, old, new, sel: jnp.where(old & new, x, -p).astype(p.dtype) if sel else x,
        params, u, state.keep, keep, selected)
    grown = jax.tree.map(lambda old, new: new & ~old, state.keep, keep)
    inner_state = _restart_grown(inner_state, params, grown)
    return out, DynamicSparseState(optax.safe_increment(t), keep, inner_state)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


_DOC_ARGS = """
  Args:
    inner: the optimizer (RigL: SGD with momentum); it sees the gradients of active
      weights only.
    sparsity: the fraction of the selected weights that are zero, in [0, 1].
    update_frequency: steps between mask updates (RigL: 100).
    end_step: no mask update from this step on (RigL: 75% of training).
    drop_fraction: :math:`\\alpha`, the fraction of active weights moved at step 0 of the
      cosine decay :math:`f_t = (\\alpha/2)(1 + \\cos(\\pi t / T_{end}))` (RigL: 0.3).
    distribution: ``"uniform"`` or ``"erk"`` (see :func:`layer_densities`).
    dense: leaves kept dense, a tree of bools or a callable ``params -> tree``. RigL keeps
      the first layer dense under the uniform distribution: which leaf that is depends on the
      model, so pass it (the training loop takes it from the model). Default: none.
    mask: the leaves that are sparse; default: leaves with ``ndim >= 2``.
    seed: the random initial mask (and SET's growth).
    erk_shapes: with ``distribution="erk"``, the shape ERK reads each leaf as (see
      :func:`layer_densities`); default its own.

  There is no N:M mode: the mask keeps a fixed count per layer, not per group of M, and growth
  by gradient or at random would break a pattern; :func:`prune_by_magnitude` and the l1 methods
  take ``pattern=``.

  ``sparsity``, ``drop_fraction``, ``update_frequency``, ``end_step`` and ``seed`` may be
  injected (``optax.inject_hyperparams``); ``distribution``, ``dense`` and ``mask`` decide
  the state's shapes and are static.

  Returns:
    An ``optax.GradientTransformationExtraArgs`` that needs ``params``. Weights outside the
    mask are set to zero at the first step and stay zero until grown; a grown weight starts
    at zero, and so do its entries in every params-shaped part of the inner optimizer's state
    (momentum, Adam's moments), as in jaxpruner.
"""


@_checks.names_errors
def rigl(
    inner: optax.GradientTransformation,
    sparsity: Any,
    *,
    update_frequency: int = 100,
    end_step: int,
    drop_fraction: Any = 0.3,
    distribution: str = "uniform",
    dense: _types.Mask | None = None,
    mask: _types.Mask | None = None,
    seed: int = 0,
    erk_shapes: Any = None,
) -> optax.GradientTransformationExtraArgs:
  r"""RigL (Evci et al. 2020): a fixed number of active weights per layer, moved during training.

  Every ``update_frequency`` steps before ``end_step``, each sparse layer drops the fraction
  :math:`f_t` of its active weights with the smallest magnitude and grows as many inactive
  ones, those with the largest dense-gradient magnitude.

  Example:
    >>> import jax, jax.numpy as jnp, optax, sparse_optax as so
    >>> tx = so.rigl(optax.sgd(0.1), 0.5, end_step=100)
    >>> params = {"w": jnp.ones((4, 4)), "b": jnp.ones(4)}
    >>> updates, _ = tx.update(jax.tree.map(jnp.zeros_like, params), tx.init(params), params)
    >>> int(so.count_nonzeros(optax.apply_updates(params, updates)))  # 8 of 16, and the bias
    12

  References:
    Evci et al., Rigging the Lottery: Making All Tickets Winners, ICML 2020.
  """
  return _dynamic_sparse("gradient", inner, sparsity,
                         update_frequency=update_frequency, end_step=end_step,
                         drop_fraction=drop_fraction, distribution=distribution, dense=dense,
                         mask=mask, seed=seed, erk_shapes=erk_shapes)


@_checks.names_errors
def set_(
    inner: optax.GradientTransformation,
    sparsity: Any,
    *,
    update_frequency: int = 100,
    end_step: int,
    drop_fraction: Any = 0.3,
    distribution: str = "uniform",
    dense: _types.Mask | None = None,
    mask: _types.Mask | None = None,
    seed: int = 0,
    erk_shapes: Any = None,
) -> optax.GradientTransformationExtraArgs:
  r"""SET (Mocanu et al. 2018): as :func:`rigl`, but grown weights are chosen at random.

  Named ``set_`` as Python's ``set`` is taken.

  References:
    Mocanu et al., Scalable training of artificial neural networks with adaptive sparse
    connectivity inspired by network science, Nature Communications 2018.
  """
  return _dynamic_sparse("random", inner, sparsity,
                         update_frequency=update_frequency, end_step=end_step,
                         drop_fraction=drop_fraction, distribution=distribution, dense=dense,
                         mask=mask, seed=seed, erk_shapes=erk_shapes)


rigl.__doc__ += _DOC_ARGS
set_.__doc__ += _DOC_ARGS
