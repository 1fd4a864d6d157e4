"""Pinning: weights that are zero stay zero (adaptive sparse retraining, pruning)."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from sparse_optax import _base


class FreezeZerosState(NamedTuple):
  count: jax.Array  # int32
  mask: optax.Params  # bool, True where the weight is pinned at zero


def freeze_zeros(
    start_step: int = 0, *, min_ndim: int = 2
) -> optax.GradientTransformationExtraArgs:
  r"""Weights that are zero stay zero: a mask that only grows.

  From step ``start_step`` on, every weight of a leaf with ``ndim >= min_ndim``
  that is exactly zero is added to the mask, and masked weights are pinned:

  .. math::
    m_{n} = m_{n-1} \lor (\theta_n = 0), \qquad
    u_n \leftarrow \begin{cases} -\theta_n & m_n \\ u_n & \text{else} \end{cases}

  so that ``optax.apply_updates`` gives exactly 0. Put it last in a chain:
  ``optax.chain(so.rda(...), so.freeze_zeros(start_step=N_rda))`` is RDA
  followed by adaptive sparse retraining (paper 001). Biases (``ndim 1``) start
  at zero and are not pinned by default.

  Args:
    start_step: the optax step count from which zeros are pinned.
    min_ndim: only leaves with at least this many dimensions are pinned.

  Returns:
    An ``optax.GradientTransformationExtraArgs`` that needs ``params``.

  Example:
    >>> import jax.numpy as jnp, optax, sparse_optax as so
    >>> tx = optax.chain(optax.sgd(1.0), so.freeze_zeros(min_ndim=1))
    >>> params = jnp.array([0.0, 1.0])
    >>> state = tx.init(params)
    >>> updates, state = tx.update(jnp.array([-1.0, -1.0]), state, params)
    >>> optax.apply_updates(params, updates)
    Array([0., 2.], dtype=float32)
  """
  if not isinstance(start_step, int) or start_step < 0:
    raise ValueError(f"start_step must be a non-negative int; got {start_step!r}.")

  def init_fn(params):
    _base.check_float_params("freeze_zeros", params)
    mask = jax.tree.map(
        lambda x: jnp.zeros(x.shape if x.ndim >= min_ndim else (), bool), params
    )
    return FreezeZerosState(jnp.zeros([], jnp.int32), mask)

  def update_fn(updates, state, params=None, **extra_args):
    del extra_args
    _base.require_params(params, "freeze_zeros")
    _base.check_tree_match("freeze_zeros", "updates", updates, params)
    _base.check_tree_match("freeze_zeros", "params", params, state.mask, shapes=False)
    active = state.count >= start_step

    def leaf(p, u, m):
      if p.ndim < min_ndim:
        return u, m
      m = m | (active & (p == 0))
      return jnp.where(m, -p, u).astype(p.dtype), m

    pairs = jax.tree.map(leaf, params, updates, state.mask)
    out, mask = jax.tree.transpose(
        jax.tree.structure(params), jax.tree.structure((0, 0)), pairs
    )
    return out, FreezeZerosState(optax.safe_increment(state.count), mask)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
