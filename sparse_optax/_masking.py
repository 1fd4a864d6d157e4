"""Pinning: weights that are zero stay zero (adaptive sparse retraining, pruning)."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from sparse_optax import _checks
from sparse_optax import _types


class FreezeZerosState(NamedTuple):
  count: jax.Array  # int32
  mask: optax.Params  # bool, each param's shape: True where the weight is pinned at zero


@_checks.names_errors
def freeze_zeros(
    start_step: int = 0, *, mask: _types.Mask | None = None
) -> optax.GradientTransformationExtraArgs:
  r"""Weights that are zero stay zero: a mask that only grows.

  From step ``start_step`` on, every weight of a leaf in ``mask`` that is
  exactly zero is added to the pinned set, and pinned weights stay at zero:

  .. math::
    m_{n} = m_{n-1} \lor (\theta_n = 0), \qquad
    u_n \leftarrow \begin{cases} -\theta_n & m_n \\ u_n & \text{else} \end{cases}

  so that ``optax.apply_updates`` gives exactly 0. Put it last in a chain:
  ``optax.chain(so.rda(...), so.freeze_zeros(start_step=N_rda))`` is RDA
  followed by adaptive sparse retraining (He et al., 2020).

  Args:
    start_step: the optax step count from which zeros are pinned (an int; it
      may be traced under ``optax.inject_hyperparams``).
    mask: the leaves whose zeros are pinned, a tree of bools (the params'
      structure or a prefix) or a callable ``params -> tree``. Default: leaves
      with ``ndim >= 2`` (biases start at zero and are not pinned).

  Returns:
    An ``optax.GradientTransformationExtraArgs`` that needs ``params``.

  Example:
    >>> import jax.numpy as jnp, optax, sparse_optax as so
    >>> tx = optax.chain(optax.sgd(1.0), so.freeze_zeros(mask=True))
    >>> params = jnp.array([0.0, 1.0])
    >>> state = tx.init(params)
    >>> updates, state = tx.update(jnp.array([-1.0, -1.0]), state, params)
    >>> optax.apply_updates(params, updates)
    Array([0., 2.], dtype=float32)
  """
  _checks.check_step("start_step", start_step)

  def init_fn(params):
    _checks.check_float_params(params)
    _checks.resolve_mask(mask, params)
    # Each param's shape even outside the mask: the state shards like the params.
    return FreezeZerosState(jnp.zeros([], jnp.int32),
                            jax.tree.map(lambda x: jnp.zeros(x.shape, bool), params))

  def update_fn(updates, state, params=None, **extra_args):
    del extra_args
    _checks.require_params(params)
    _checks.check_tree_match("updates", updates, params)
    _checks.check_tree_match("params", params, state.mask)
    selected = _checks.resolve_mask(mask, params)
    active = state.count >= start_step
    pinned = jax.tree.map(lambda p, m, s: m | (active & (p == 0)) if s else m,
                          params, state.mask, selected)
    out = jax.tree.map(lambda p, u, m, s: jnp.where(m, -p, u).astype(p.dtype) if s else u,
                       params, updates, pinned, selected)
    return out, FreezeZerosState(optax.safe_increment(state.count), pinned)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
