"""Magnitude pruning (Han et al.) and gradual magnitude pruning (Zhu & Gupta), a mask transform."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from sparse_optax import _checks
from sparse_optax import _dynamic_sparse
from sparse_optax import _nm
from sparse_optax import _tree
from sparse_optax import _types

SCOPES = ("layer", "global", "erk")


def polynomial_sparsity(
    final_sparsity: float,
    begin_step: int,
    end_step: int,
    *,
    initial_sparsity: float = 0.0,
    power: float = 3.0,
) -> optax.Schedule:
  r"""Zhu & Gupta's sparsity schedule (cubic for ``power=3``).

  .. math::
    s_t = s_f + (s_i - s_f)\left(1 - \frac{t - t_0}{t_1 - t_0}\right)^{p},
    \quad t \in [t_0, t_1], \text{ clipped outside.}

  Example:
    >>> import sparse_optax as so
    >>> s = so.polynomial_sparsity(0.9, 0, 10)
    >>> [round(float(s(t)), 4) for t in (0, 5, 10, 20)]
    [0.0, 0.7875, 0.9, 0.9]
  """
  _checks.check_hparam("final_sparsity", final_sparsity, at_most_one=True, allow_schedule=False)
  _checks.check_hparam("initial_sparsity", initial_sparsity, at_most_one=True,
                     allow_schedule=False)
  if not 0 <= begin_step < end_step:
    raise ValueError(f"need 0 <= begin_step < end_step; got {begin_step}, {end_step}.")

  def schedule(count):
    frac = jnp.clip((count - begin_step) / (end_step - begin_step), 0.0, 1.0)
    return final_sparsity + (initial_sparsity - final_sparsity) * (1 - frac) ** power

  return schedule


class PruneByMagnitudeState(NamedTuple):
  count: jax.Array  # int32
  keep: optax.Params  # bool, each param's shape: True where the weight is alive


def _kth_smallest_magnitude(values: jax.Array, k: jax.Array) -> jax.Array:
  """The k-th smallest |value| (k >= 1), or -1 when k == 0 (prune nothing)."""
  ordered = jnp.sort(jnp.abs(values.reshape(-1)))
  return jnp.where(k > 0, ordered[jnp.clip(k - 1, 0, ordered.size - 1)], -1.0)


@_checks.names_errors
def prune_by_magnitude(
    sparsity: optax.ScalarOrSchedule,
    *,
    begin_step: int = 0,
    end_step: int | None = None,
    frequency: int = 1,
    scope: str = "layer",
    mask: _types.Mask | None = None,
    pattern: tuple[int, int] | str | None = None,
    pattern_axes: Any = None,
    erk_shapes: Any = None,
) -> optax.GradientTransformationExtraArgs:
  r"""Magnitude pruning with a mask that only shrinks; pruned weights stay exactly zero.

  At every pruning step :math:`t` (``begin_step <= t <= end_step`` and
  :math:`(t - t_0) \bmod` ``frequency`` :math:`= 0`, and ``t = end_step``), the smallest-magnitude
  fraction :math:`s_t` of the weights of each leaf (``scope="layer"``), of all
  prunable leaves together (``scope="global"``), or of each leaf at its Erdős–Rényi-Kernel
  share of :math:`s_t` (``scope="erk"``, see :func:`erk_densities`) is removed from the mask; at
  every step the update of masked weights is :math:`-\theta` so that
  ``optax.apply_updates`` gives 0. Put it last in a chain.

  * Han et al. (prune once, fine-tune with the mask):
    ``prune_by_magnitude(0.9, begin_step=t, end_step=t)``.
  * Zhu & Gupta (gradual): ``prune_by_magnitude(polynomial_sparsity(0.9, t0, t1),
    begin_step=t0, end_step=t1, frequency=100)``.

  **N:M.** With ``pattern=(N, M)`` (as jaxpruner's ``NByM``), every pruning step first keeps,
  in each group of M consecutive weights along a masked leaf's input dimension, the N of
  largest magnitude among those alive, then prunes by ``sparsity`` as above, counting the
  pattern's zeros: a sparsity at or below :math:`1 - N/M` adds nothing to the pattern, a higher
  one prunes the smallest survivors further. The pattern holds from the first pruning step on
  (the mask only shrinks). ``pattern_axes`` as in :func:`soft_threshold` (default ``"HWIO"``).

  Args:
    sparsity: fraction to prune, in [0, 1] (float or schedule).
    begin_step: first pruning step.
    end_step: last pruning step (default: no end).
    frequency: steps between pruning steps.
    scope: ``"layer"``, ``"global"`` or ``"erk"``.
    mask: the leaves that are pruned, a tree of bools (the params' structure or
      a prefix) or a callable ``params -> tree``. Default: leaves with
      ``ndim >= 2`` (not biases or normalisation scales).
    pattern: ``(N, M)`` or ``"N:M"``, at most N non-zeros per group of M (default: none).
    pattern_axes: each leaf's input axes for the pattern, see :func:`soft_threshold`.
    erk_shapes: with ``scope="erk"``, the shape ERK reads each leaf as (see
      :func:`layer_densities`); default its own.

  The step counts are ints; they may be traced (``optax.inject_hyperparams``),
  in which case they are checked where they are used, not here.

  Returns:
    An ``optax.GradientTransformationExtraArgs`` that needs ``params``.

  Example:
    >>> import jax.numpy as jnp, optax, sparse_optax as so
    >>> tx = optax.chain(optax.sgd(0.0), so.prune_by_magnitude(0.5))
    >>> params = jnp.array([[0.1, -3.0, 0.2, 4.0]])
    >>> updates, _ = tx.update(jnp.zeros((1, 4)), tx.init(params), params)
    >>> optax.apply_updates(params, updates)
    Array([[ 0., -3.,  0.,  4.]], dtype=float32)
  """
  _checks.check_hparam("sparsity", sparsity, at_most_one=True)
  if scope not in SCOPES:
    raise ValueError(f"scope must be one of {SCOPES}; got {scope!r}.")
  _dynamic_sparse.check_erk_shapes(erk_shapes, scope == "erk", 'scope="erk"')
  _checks.check_step("begin_step", begin_step)
  _checks.check_step("frequency", frequency, minimum=1)
  if end_step is not None:
    _checks.check_step("end_step", end_step)
    if _checks.is_concrete(begin_step, end_step) and end_step < begin_step:
      raise ValueError(f"end_step ({end_step}) must be >= begin_step ({begin_step}).")
  n_m = _nm.check_spec(pattern, pattern_axes)

  def patterned(params, selected):
    if n_m is None:
      return None
    return _nm.leaf_axes(pattern_axes, params, selected, n_m[1])

  def init_fn(params):
    _checks.check_float_params(params)
    patterned(params, _checks.resolve_mask(mask, params))  # its errors at init
    if scope == "erk":
      _dynamic_sparse.erk_shapes_of(erk_shapes, params)
    # Each param's shape even outside the mask: the state shards like the params.
    return PruneByMagnitudeState(jnp.zeros([], jnp.int32),
                                 jax.tree.map(lambda x: jnp.ones(x.shape, bool), params))

  def new_mask(params, keep, s, selected):
    # Weights already pruned count as the smallest, so the mask only shrinks.
    live = jax.tree.map(lambda p, k: jnp.where(k, p, 0), params, keep)
    axes = patterned(params, selected)
    if axes is not None:  # the pattern first; its zeros then count towards the sparsity
      structure = jax.tree.structure(params)
      keep = structure.unflatten([k if a is None else k & _nm.mask_of(p, n_m, a) for p, k, a in
                                  zip(jax.tree.leaves(live), jax.tree.leaves(keep), axes)])
      live = jax.tree.map(lambda p, k: jnp.where(k, p, 0), params, keep)
    if scope == "global":
      flat = [x.reshape(-1) for x, m in zip(jax.tree.leaves(live), jax.tree.leaves(selected)) if m]
      if not flat:
        return keep
      values = jnp.concatenate(flat)
      k = jnp.floor(s * values.size).astype(jnp.int32)
      thr = _kth_smallest_magnitude(values, k)
      return jax.tree.map(lambda p, m, sel: m & (jnp.abs(p) > thr) if sel else m,
                          live, keep, selected)

    if scope == "erk":
      fractions = jax.tree.map(lambda d: 1.0 - d, _dynamic_sparse.layer_densities(
          params, s, "erk", selected, erk_shapes=erk_shapes))
    else:
      fractions = jax.tree.map(lambda _: s, params)

    def leaf(p, m, sel, fraction):
      if not sel:
        return m
      k = jnp.floor(fraction * p.size).astype(jnp.int32)
      return m & (jnp.abs(p) > _kth_smallest_magnitude(p, k))

    return jax.tree.map(leaf, live, keep, selected, fractions)

  def update_fn(updates, state, params=None, **extra_args):
    del extra_args
    _checks.require_params(params)
    _checks.check_tree_match("updates", updates, params)
    _checks.check_tree_match("params", params, state.keep)
    selected = _checks.resolve_mask(mask, params)
    t = state.count
    due = (t >= begin_step) & ((t - begin_step) % frequency == 0)
    if end_step is not None:
      # end_step always prunes, so the final sparsity is reached even when the
      # ramp is not a whole number of frequency periods.
      due = (due & (t <= end_step)) | (t == end_step)
    s = _tree.value_at(sparsity, t)
    keep = jax.lax.cond(due, lambda: new_mask(params, state.keep, s, selected),
                        lambda: state.keep)
    out = jax.tree.map(lambda p, u, m, sel: jnp.where(m, u, -p).astype(p.dtype) if sel else u,
                       params, updates, keep, selected)
    return out, PruneByMagnitudeState(optax.safe_increment(t), keep)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
