"""LOBSTER: loss-based sensitivity shrinkage (Tartaglione et al., 2020), around any optimizer."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from sparse_optax import _checks
from sparse_optax import _tree
from sparse_optax import _types


class LobsterState(NamedTuple):
  inner: Any


@_checks.names_errors
def lobster(
    inner: optax.GradientTransformation,
    strength: optax.ScalarOrSchedule,
    mask: _types.Mask | None = None,
) -> optax.GradientTransformationExtraArgs:
  r"""Shrink weights whose loss gradient is small, after each step of ``inner``.

  With :math:`g` the raw gradient and :math:`\theta' = \theta_n + u_n` the
  params after the inner optimizer's step:

  .. math::
    \theta_{n+1} = \theta' - \lambda\,\theta' \max(0,\, 1 - |g|),

  as the authors' code does (raw :math:`|g|`). Weights become small, not zero:
  the prune-on-plateau procedure of the training loop removes them, and
  :func:`prune_by_magnitude` or :func:`freeze_zeros` pins them.

  Args:
    inner: the optimizer (paper: ``optax.sgd(0.1)``).
    strength: :math:`\lambda \ge 0` (paper: 1e-4).
    mask: the shrunk leaves, a tree of bools (the params' structure or a
      prefix) or a callable ``params -> tree``. The paper shrinks conv and
      linear weights and biases, not normalisation scales and shifts; rank
      cannot tell a bias from a BatchNorm shift, so pass a mask by name for
      models with normalisation. Default: every leaf.

  Returns:
    An ``optax.GradientTransformationExtraArgs`` that needs ``params``.

  Example:
    >>> import jax.numpy as jnp, optax, sparse_optax as so
    >>> tx = so.lobster(optax.sgd(0.0), strength=0.5)
    >>> params = jnp.array([2.0, 2.0])
    >>> updates, _ = tx.update(jnp.array([0.0, 3.0]), tx.init(params), params)
    >>> optax.apply_updates(params, updates)  # |g| >= 1 is not shrunk
    Array([1., 2.], dtype=float32)

  References:
    Tartaglione et al., LOBSTER: Loss-Based Sensitivity Regularization, 2020.
  """
  _checks.check_hparam("strength", strength)
  every_leaf = lambda params: jax.tree.map(lambda _: True, params)  # noqa: E731
  inner = optax.with_extra_args_support(inner)

  def init_fn(params):
    _checks.check_float_params(params)
    _checks.resolve_mask(every_leaf if mask is None else mask, params)
    return LobsterState(inner=(jnp.zeros([], jnp.int32), inner.init(params)))

  def update_fn(updates, state, params=None, **extra_args):
    _checks.require_params(params)
    _checks.check_tree_match("updates", updates, params)
    count, inner_state = state.inner
    u, inner_state = inner.update(updates, inner_state, params, **extra_args)
    lam = _tree.value_at(strength, count)

    selected = _checks.resolve_mask(every_leaf if mask is None else mask, params)

    def leaf(p, ui, g, sel):
      if not sel:
        return ui
      stepped = p + ui
      shrink = lam.astype(p.dtype) * stepped * jnp.maximum(0, 1 - jnp.abs(g))
      return (ui - shrink).astype(p.dtype)

    out = jax.tree.map(leaf, params, u, updates, selected)
    return out, LobsterState(inner=(optax.safe_increment(count), inner_state))

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
