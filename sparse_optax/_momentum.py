"""Momentum on a fixed time scale (Siegel, Chen & Xu, 2020, §3.3)."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from sparse_optax import _checks
from sparse_optax import _tree


class ScaleByTimescaleMomentumState(NamedTuple):
  count: jax.Array  # int32
  velocity: optax.Updates


@_checks.names_errors
def scale_by_timescale_momentum(
    learning_rate: optax.ScalarOrSchedule,
    timescale: optax.ScalarOrSchedule,
    accumulator_dtype: Any | None = None,
) -> optax.GradientTransformationExtraArgs:
  r"""Exponential moving average of the updates over a fixed time scale.

  .. math::
    \mu_n = e^{-s_n / T}, \qquad v_{n+1} = \mu_n v_n + (1 - \mu_n)\, g_n,

  and the output is :math:`v_{n+1}`. Because :math:`\mu` depends on the step
  size, the gradients are averaged over a fixed span of "time" :math:`T`
  rather than a fixed number of steps; follow it with
  ``optax.scale_by_learning_rate(learning_rate)`` for the step itself.

  Args:
    learning_rate: the step size :math:`s_n` (float or schedule of the count).
    timescale: :math:`T > 0` (float or schedule).
    accumulator_dtype: dtype :math:`v` is stored in (as ``optax.sgd``'s
      ``accumulator_dtype``); default the params'. Each step computes in the
      wider of it and the updates' dtype. A ``bfloat16`` average stops moving
      once :math:`1 - \mu < 2^{-8}` (long time scales, small steps).

  Returns:
    An ``optax.GradientTransformationExtraArgs``.

  Example:
    >>> import jax.numpy as jnp, optax, sparse_optax as so
    >>> tx = optax.chain(so.scale_by_timescale_momentum(0.5, 1.0),
    ...                  optax.scale_by_learning_rate(0.5))
    >>> params = jnp.array([1.0, -2.0])
    >>> state = tx.init(params)
    >>> updates, state = tx.update(jnp.array([1.0, 1.0]), state, params)
    >>> updates  # -s (1 - e^{-s/T}) g
    Array([-0.19673467, -0.19673467], dtype=float32)

  References:
    Siegel, Chen, Xu, Training Sparse Neural Networks using Compressed Sensing, 2020.
  """
  _checks.check_hparam("learning_rate", learning_rate)
  _checks.check_hparam("timescale", timescale, positive=True)
  _checks.check_dtype("accumulator_dtype", accumulator_dtype)

  def init_fn(params):
    _checks.check_float_params(params)
    return ScaleByTimescaleMomentumState(
        count=jnp.zeros([], jnp.int32),
        velocity=optax.tree.zeros_like(params, dtype=accumulator_dtype),
    )

  def update_fn(updates, state, params=None, **extra_args):
    del params, extra_args
    _checks.check_tree_match("updates", updates, state.velocity)
    s = _tree.value_at(learning_rate, state.count)
    mu = jnp.exp(-s / _tree.value_at(timescale, state.count))

    def step(g, v):
      m = mu.astype(jnp.promote_types(v.dtype, g.dtype))
      return m * v + (1 - m) * g

    new = jax.tree.map(step, updates, state.velocity)
    out = jax.tree.map(lambda n, g: n.astype(g.dtype), new, updates)
    velocity = jax.tree.map(lambda n, v: n.astype(v.dtype), new, state.velocity)
    new_state = ScaleByTimescaleMomentumState(
        count=optax.safe_increment(state.count), velocity=velocity
    )
    return out, new_state

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
