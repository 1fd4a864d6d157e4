"""Affine scaling / re-weighted learning (Fedorov & Rao, 2018) as a preconditioner."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from sparse_optax import _checks
from sparse_optax import _tree
from sparse_optax import _types

METHODS = ("l1", "l2", "focuss")


class AffineScalingState(NamedTuple):
  count: jax.Array  # int32
  omega: optax.Params  # ω, frozen between refreshes


def _omega(theta, method, tau, p):
  if method == "l1":
    return jnp.abs(theta) + tau
  if method == "l2":
    return jnp.sqrt(theta**2 + tau)
  return jnp.abs(theta) ** (2 - p) + tau


def _check(method, tau, p, period) -> None:
  if method not in METHODS:
    raise ValueError(f"method must be one of {METHODS}; got {method!r}.")
  _checks.check_hparam("tau", tau, positive=True)
  _checks.check_hparam("p", p, allow_schedule=False)
  if _checks.is_concrete(p) and not 0 <= p <= 2:
    raise ValueError(f"p must lie in [0, 2]; got {p!r}.")
  _checks.check_step("period", period, minimum=1)


@_checks.names_errors
def scale_by_affine_scaling(
    method: str = "l1",
    *,
    tau: optax.ScalarOrSchedule = 1e-3,
    p: float = 0.5,
    period: int = 1000,
    mask: _types.Mask | None = None,
) -> optax.GradientTransformationExtraArgs:
  r"""Re-weighted learning: a gradient step on :math:`q` with :math:`\theta = q \odot \omega`.

  In :math:`\theta`-space this is the gradient preconditioned by :math:`\omega^2`:

  .. math::
    u = \omega^2 \odot g, \qquad
    \omega = \begin{cases}
      |\theta_{\text{ref}}| + \tau & \text{re-weighted } \ell_1 \\
      \sqrt{\theta_{\text{ref}}^2 + \tau} & \text{re-weighted } \ell_2 \\
      |\theta_{\text{ref}}|^{2-p} + \tau & \text{FOCUSS}(p)
    \end{cases}

  with :math:`\theta_{\text{ref}}` the params at the last refresh (every
  ``period`` steps, starting at step 0). Follow with a step size, e.g.
  ``optax.chain(so.scale_by_affine_scaling("l1"), optax.sgd(lr))``, then
  magnitude-prune and retrain (:func:`prune_by_magnitude`). Leaves outside
  ``mask`` (biases, by default) are not rescaled.

  Args:
    method: ``"l1"``, ``"l2"`` or ``"focuss"``.
    tau: :math:`\tau > 0`.
    p: FOCUSS exponent, :math:`0 \le p \le 2`.
    period: steps between refreshes of :math:`\omega`.
    mask: the preconditioned leaves, a tree of bools (the params' structure or a
      prefix) or a callable ``params -> tree``; the others keep
      :math:`\omega = 1`. Default: leaves with ``ndim >= 2``.

  Returns:
    An ``optax.GradientTransformationExtraArgs`` that needs ``params``.

  Example:
    >>> import jax.numpy as jnp, sparse_optax as so
    >>> tx = so.scale_by_affine_scaling("l1", tau=0.5)
    >>> params = jnp.array([[0.0, 1.5]])
    >>> updates, _ = tx.update(jnp.ones((1, 2)), tx.init(params), params)
    >>> updates  # (|θ| + τ)²
    Array([[0.25, 4.  ]], dtype=float32)

  References:
    Fedorov & Rao, Re-weighted Learning for Sparsifying Deep Neural Networks, 2018.
  """
  _check(method, tau, p, period)

  def init_fn(params):
    _checks.check_float_params(params)
    _checks.resolve_mask(mask, params)
    # Each param's shape even outside the mask: the state shards like the params.
    return AffineScalingState(jnp.zeros([], jnp.int32), optax.tree.ones_like(params))

  def update_fn(updates, state, params=None, **extra_args):
    del extra_args
    _checks.require_params(params)
    _checks.check_tree_match("updates", updates, params)
    _checks.check_tree_match("params", params, state.omega)
    selected = _checks.resolve_mask(mask, params)
    refresh = state.count % period == 0
    t = _tree.value_at(tau, state.count)

    def leaf(x, w, sel):
      if not sel:
        return w
      return jnp.where(refresh, _omega(x, method, t, p), w).astype(w.dtype)

    omega = jax.tree.map(leaf, params, state.omega, selected)
    out = jax.tree.map(lambda u, w: (u * w * w).astype(u.dtype), updates, omega)
    return out, AffineScalingState(optax.safe_increment(state.count), omega)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


class AffineScalingGreedyState(NamedTuple):
  count: jax.Array  # int32
  omega: optax.Params  # ω of the current iteration t
  inner: Any  # the inner optimizer's state, in q-space


@_checks.names_errors
def affine_scaling(
    inner: optax.GradientTransformation,
    method: str = "l1",
    *,
    tau: optax.ScalarOrSchedule = 1e-3,
    p: float = 0.5,
    period: int = 1000,
    leafwise: bool = False,
    iterations: int | None = None,
    mask: _types.Mask | None = None,
) -> optax.GradientTransformationExtraArgs:
  r"""Re-weighted learning with the paper's greedy initialiser: ``inner`` steps on :math:`q`.

  The params are :math:`\theta = q \odot \omega`, ``inner`` optimizes :math:`q`
  (its gradient is :math:`g \odot \omega`, its state lives in :math:`q`-space),
  and :math:`q` carries over when :math:`\omega` is refreshed (:math:`q^t
  \leftarrow q^{t-1}`), so the refresh moves :math:`\theta`:

  .. math::
    \text{refresh step:}\quad \omega' = f(\theta),\quad
      \theta \leftarrow \theta \odot \omega' / \omega
      \quad \text{(no gradient step)} \\
    \text{other steps:}\quad \theta \leftarrow \theta + \omega \odot
      \mathrm{inner}(g \odot \omega)

  with :math:`f` as in :func:`scale_by_affine_scaling` and :math:`\omega = 1`
  before a leaf's first refresh. Refreshes happen every ``period`` steps from
  step 0, for every selected leaf or (``leafwise``) for one selected leaf at a
  time in tree order, cycling. :func:`scale_by_affine_scaling` is the variant
  the paper rejects, with :math:`\theta` continuous.

  Args:
    inner: the optimizer of :math:`q` (paper: SGD).
    method: ``"l1"``, ``"l2"`` or ``"focuss"``.
    tau: :math:`\tau > 0`.
    p: FOCUSS exponent, :math:`0 \le p \le 2`.
    period: steps per iteration :math:`t` (the paper: 1000 epochs).
    leafwise: refresh one leaf per iteration (the paper's LeNet-5 runs: one
      layer per iteration, 8 iterations, each layer twice).
    iterations: the number of refreshes; after them :math:`\omega` stays and
      ``inner`` goes on in :math:`q`-space (retraining after pruning). None:
      no limit.
    mask: the re-weighted leaves (tree of bools, a prefix or a callable);
      the others take plain ``inner`` steps. Default: leaves with ``ndim >= 2``.

  Returns:
    An ``optax.GradientTransformationExtraArgs`` that needs ``params``.

  Example:
    >>> import jax.numpy as jnp, optax, sparse_optax as so
    >>> tx = so.affine_scaling(optax.sgd(1.0), "l1", tau=0.5)
    >>> params = jnp.array([[0.0, 1.5]])
    >>> updates, _ = tx.update(jnp.ones((1, 2)), tx.init(params), params)
    >>> params + updates  # step 0 refreshes: θ (|θ| + τ) / 1
    Array([[0., 3.]], dtype=float32)

  References:
    Fedorov & Rao, Re-weighted Learning for Sparsifying Deep Neural Networks, 2018.
  """
  _check(method, tau, p, period)
  if iterations is not None:
    _checks.check_step("iterations", iterations, minimum=0)
  inner = optax.with_extra_args_support(inner)

  def init_fn(params):
    _checks.check_float_params(params)
    _checks.resolve_mask(mask, params)
    return AffineScalingGreedyState(jnp.zeros([], jnp.int32), optax.tree.ones_like(params),
                                    inner.init(params))

  def update_fn(updates, state, params=None, **extra_args):
    _checks.require_params(params)
    _checks.check_tree_match("updates", updates, params)
    _checks.check_tree_match("params", params, state.omega)
    selected = _checks.resolve_mask(mask, params)
    refresh = state.count % period == 0
    if iterations is not None:
      refresh &= state.count < iterations * period
    t = _tree.value_at(tau, state.count)
    leaves, treedef = jax.tree.flatten(selected)
    order = [i for i, sel in enumerate(leaves) if sel]
    iteration = state.count // period
    chosen = [False] * len(leaves)
    for rank, i in enumerate(order):
      chosen[i] = (iteration % len(order) == rank) if leafwise else True
    chosen = jax.tree.unflatten(treedef, chosen)

    def new_omega(x, w, this):
      if this is False:
        return w
      return jnp.where(refresh & this, _omega(x, method, t, p), w).astype(w.dtype)

    omega = jax.tree.map(new_omega, params, state.omega, chosen)
    q_grads = jax.tree.map(lambda g, w: (g * w).astype(g.dtype), updates, state.omega)
    u_q, inner_state = inner.update(q_grads, state.inner, params, **extra_args)
    step = jax.tree.map(lambda u, w: (u * w).astype(u.dtype), u_q, state.omega)
    jump = jax.tree.map(lambda x, w, w_new: (x * (w_new / w) - x).astype(x.dtype),
                        params, state.omega, omega)
    out = jax.tree.map(lambda j, s: jnp.where(refresh, j, s), jump, step)
    inner_state = jax.tree.map(lambda old, new: jnp.where(refresh, old, new),
                               state.inner, inner_state)
    return out, AffineScalingGreedyState(optax.safe_increment(state.count), omega, inner_state)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
