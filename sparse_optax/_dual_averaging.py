"""The dual-averaging accumulator and the xRDA interpolation (one accumulator, two centres)."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from sparse_optax import _checks
from sparse_optax import _tree

_CENTERS = ("params", "initial")


class DualAveragingState(NamedTuple):
  count: jax.Array  # int32
  z: optax.Params  # the (unthresholded) dual-averaged point
  initial: optax.Params  # θ_0 for center="initial", else None


@_checks.names_errors
def dual_averaging(
    averaging: optax.ScalarOrSchedule,
    *,
    center: str = "params",
    _point: bool = False,
) -> optax.GradientTransformationExtraArgs:
  r"""Dual-averaging accumulator with averaging parameter :math:`\alpha_n`.

  With incoming update :math:`u_n` (a step such as :math:`-s_n v_n`) and
  centre :math:`c_n`:

  .. math::
    z_{n+1} = \alpha_n z_n + (1 - \alpha_n)\, c_n + u_n, \qquad z_0 = \theta_0,

  and the output is :math:`z_{n+1} - \theta_n`, so that the new params are
  :math:`z_{n+1}` (followed by :func:`soft_threshold`, the prox of
  :math:`z_{n+1}`).

  * ``center="params"`` (:math:`c_n = \theta_n`): the xRDA interpolation of
    Siegel, Chen & Xu (2020). :math:`\alpha \equiv 0` is the plain (proximal) gradient step,
    :math:`\alpha \equiv 1` is RDA (:math:`z` the running dual average).
  * ``center="initial"`` (:math:`c_n = \theta_0`): Xiao's RDA around the initial
    point (He et al., 2020): with :math:`\alpha_n = \sqrt{(n-1)/n}` and
    :math:`s_n = 1/(\gamma\sqrt{n})`, :math:`z_n = \theta_0 - G_n / (\gamma\sqrt{n})`.

  Args:
    averaging: :math:`\alpha_n \in [0, 1]` (float or schedule of the count).
    center: ``"params"`` (xRDA) or ``"initial"`` (RDA around :math:`\theta_0`).

  Returns:
    An ``optax.GradientTransformationExtraArgs`` that needs ``params``.

  Example:
    >>> import jax.numpy as jnp, optax, sparse_optax as so
    >>> tx = so.dual_averaging(0.5)
    >>> params = jnp.array([1.0, -1.0])
    >>> state = tx.init(params)
    >>> updates, state = tx.update(jnp.array([0.1, 0.1]), state, params)
    >>> optax.apply_updates(params, updates)  # ½ z + ½ θ + u, with z_0 = θ_0
    Array([ 1.1, -0.9], dtype=float32)

  References:
    Siegel, Chen, Xu, Training Sparse Neural Networks using Compressed Sensing, 2020;
    Xiao, Dual Averaging Methods for Regularized Stochastic Learning, 2010.
  """
  _checks.check_hparam("averaging", averaging, at_most_one=True)
  if center not in _CENTERS:
    raise ValueError(f"center must be one of {_CENTERS}; got {center!r}.")
  keep_initial = center == "initial"

  def init_fn(params):
    _checks.check_float_params(params)
    return DualAveragingState(
        count=jnp.zeros([], jnp.int32),
        z=_tree.copy_tree(params),
        initial=_tree.copy_tree(params) if keep_initial else None,
    )

  def update_fn(updates, state, params=None, **extra_args):
    del extra_args
    _checks.require_params(params)
    _checks.check_tree_match("params", params, state.z)
    _checks.check_tree_match("updates", updates, state.z)
    alpha = _tree.value_at(averaging, state.count)
    centre = state.initial if keep_initial else params

    def step(z, c, u):
      a = alpha.astype(z.dtype)
      return (a * z + (1 - a) * c + u).astype(z.dtype)

    z = jax.tree.map(step, state.z, centre, updates)
    # _point (the named optimizers, followed by soft_threshold(_point=True)): z itself, so
    # that the sparsity target solves on a buffer that exists anyway.
    out = z if _point else jax.tree.map(lambda zi, p: (zi - p).astype(p.dtype), z, params)
    return out, DualAveragingState(optax.safe_increment(state.count), z, state.initial)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
