"""Named optimizers: short chains of the public primitives."""

from __future__ import annotations

from typing import Any

import optax

from sparse_optax import _checks
from sparse_optax import _nm
from sparse_optax import _target
from sparse_optax import _types
from sparse_optax._dual_averaging import dual_averaging
from sparse_optax._momentum import scale_by_timescale_momentum
from sparse_optax._prox import accumulated_threshold, soft_threshold
from sparse_optax._reweighting import log_l1_weights, uniform_l1_weights
from sparse_optax._schedules import rda_averaging, rda_step_size


def _weights_or_uniform(weights: _types.Weighting | None, mask: _types.Mask | None):
  return uniform_l1_weights(mask) if weights is None else weights


def _prox(l1, learning_rate, averaging, weights, mask, sparsity, scope, solve_every,
          pattern=None, pattern_axes=None, point=False, erk_shapes=None):
  """The soft-threshold step of a fixed strength ``l1``, or of the one a target asks for;
  with an N:M ``pattern``, its prox. ``point``: the updates it gets are the dual average
  itself (see :func:`dual_averaging`'s ``_point``)."""
  _nm.check_spec(pattern, pattern_axes)  # refused here, in the caller's name
  extra = dict(pattern=pattern, pattern_axes=pattern_axes, _point=point, erk_shapes=erk_shapes)
  if sparsity is None:
    _target.check_no_control(scope, solve_every)
    if l1 is None:
      raise ValueError(f"{_checks.caller()}: give l1 (the l1 strength) or sparsity (the fraction "
                       "of zeros wanted, and the strength follows).")
    return soft_threshold(accumulated_threshold(l1, learning_rate, averaging, weights), mask,
                          **extra)
  return soft_threshold(accumulated_threshold(1.0, learning_rate, averaging, weights), mask,
                        sparsity=sparsity, scope=scope, solve_every=solve_every, initial_l1=l1,
                        **extra)


@_checks.names_errors
def xrda(
    learning_rate: optax.ScalarOrSchedule,
    averaging: optax.ScalarOrSchedule,
    l1: optax.ScalarOrSchedule | None = None,
    *,
    sparsity: optax.ScalarOrSchedule | None = None,
    scope: str = "global",
    solve_every: int | None = _target.SOLVE_EVERY,
    momentum_timescale: optax.ScalarOrSchedule,
    maximum_factor: optax.ScalarOrSchedule | None = None,
    beta: optax.ScalarOrSchedule | None = None,
    magnitude_timescale: optax.ScalarOrSchedule | None = None,
    weight_decay: optax.ScalarOrSchedule = 0.0,
    structure: Any = None,
    kernel_layout: str | None = None,
    mask: _types.Mask | None = None,
    weights: _types.Weighting | None = None,
    accumulator_dtype: Any | None = None,
    pattern: tuple[int, int] | str | None = None,
    pattern_axes: Any = None,
    erk_shapes: Any = None,
) -> optax.GradientTransformationExtraArgs:
  r"""xRDA with momentum and adaptive log-l1 (Siegel, Chen & Xu, 2020), as the authors ran it.

  Per leaf, at step :math:`n`:

  .. math::
    g &\leftarrow g_n + \text{wd}\,\theta_n \\
    r &\leftarrow \mu' r + (1-\mu')\,\mathrm{mag}(\theta_n), \quad \mu' = e^{-s_n/T_b} \\
    w &= cF / (1 + (F-1)\, r/\max r) \\
    B &\leftarrow \alpha_n B + s_n w \\
    z &\leftarrow \alpha_n z + (1-\alpha_n)\theta_n, \quad
    v \leftarrow \mu v + (1-\mu) g, \quad \mu = e^{-s_n/T} \\
    z &\leftarrow z - s_n v \\
    \theta_{n+1} &= \operatorname{sign}(z)\max(|z| - \lambda B, 0)

  **A sparsity instead of a strength.** ``sparsity=S`` (a float or a schedule
  such as :func:`polynomial_sparsity`) replaces :math:`\lambda` by the
  fraction of the masked weights that must be exactly zero: at each step
  :math:`\lambda_n` is the :math:`\lfloor S_n N\rfloor`-th smallest ratio
  :math:`|z_i| / B_i`, so that exactly that many weights are zero (see
  :func:`soft_threshold`). This is magnitude pruning of the dual average
  :math:`z` rather than of the weights, with the log-l1 weights in :math:`B`
  deciding which layers and kernels give up weights (``scope="global"``), and a
  pruned weight comes back when its dual average outgrows the others'. It is
  the *smallest* strength that leaves the target count: once the support
  settles, the weights that stay zero have small :math:`|z|` and :math:`\lambda`
  falls with them, so the survivors are barely shrunk (the l1 bias goes away).
  :math:`\lambda` is solved exactly every ``solve_every`` steps (1000 by default)
  and follows the params' density by feedback in between (a count of an eighth of
  the weights per step), with a solve at once where the target moves or the count
  strays by more than a quarter in log-density;
  ``solve_every=1`` solves at every step (31 passes of a count, several times a
  plain update's cost: ``benchmarks/target_cost.py``), ``solve_every=None`` once,
  then feedback alone. Feedback alone matched the exact solve's count and accuracy
  when the target ramps over a long run (LeNet-300-100 at 50×, 68× and 115×,
  three seeds each), but overshoots a target held from a dense start, and an
  overshoot is slow to undo: xrda's interpolation pulls a zeroed weight's dual
  average toward zero (see the sparsity target's page in the docs); the solves
  bound it.

  The chain: ``add_decayed_weights(wd)``, :func:`scale_by_timescale_momentum`,
  ``scale_by_learning_rate``, :func:`dual_averaging`, :func:`soft_threshold`
  of :func:`accumulated_threshold` of :func:`log_l1_weights`. State: four
  buffers of parameter size in unstructured mode (:math:`v, z, r, B`); in
  kernel/channel mode :math:`r` and :math:`B` are per kernel / channel.

  Args:
    learning_rate: :math:`s_n` (float or schedule; paper: ``cosine_decay``).
    averaging: :math:`\alpha_n \in [0,1]` (paper: :func:`cosine_averaging`).
    l1: :math:`\lambda \ge 0`; or give ``sparsity``. With both, ``l1`` is the
      strength the first step uses instead of a solve.
    sparsity: the fraction of zeros wanted among the masked weights,
      :math:`S \in [0, 1)`, a float or a schedule.
    scope: ``"global"`` (one :math:`\lambda` for every masked leaf), ``"layer"``
      (each leaf at :math:`S`) or ``"erk"`` (each leaf at its
      :func:`erk_densities` share).
    solve_every: steps between exact solves of :math:`\lambda` (1000 by default,
      feedback in between; 1: every step; ``None``: at the start, then feedback
      only).
    momentum_timescale: :math:`T > 0`.
    maximum_factor: :math:`F` (default 500); or ``beta`` (:math:`F = (\beta+1)/\beta`).
    beta: see ``maximum_factor``; give one, not both.
    magnitude_timescale: :math:`T_b`; ``None`` means :math:`T`.
    weight_decay: coupled L2 on every leaf (paper: 5e-4), whatever ``mask`` says.
    structure: ``"unstructured"`` (default), ``"kernel"`` or ``"channel"``; a
      string applies to 4-D leaves (2-D convolutions), a tree or callable names
      each leaf's structure (1-D and 3-D convolutions) or a :func:`tied` group
      set across leaves (attention heads, MLP neurons: :func:`head_groups`,
      :func:`neuron_groups`), see :func:`log_l1_weights`.
    kernel_layout: ``"HWIO"`` (default: Flax, Haiku) or ``"OIHW"`` (PyTorch, Equinox); also
      where a ``pattern``'s groups lie when ``pattern_axes`` is not given.
    mask: the leaves with l1, a tree of bools (the params' structure or a
      prefix) or a callable ``params -> tree``. Default: leaves with
      ``ndim >= 2``; e.g. leave an embedding or the classifier out.
    weights: another l1 weighting instead of the log-l1 one, e.g.
      :func:`uniform_l1_weights` (plain l1); then ``maximum_factor``, ``beta``,
      ``magnitude_timescale``, ``structure`` and ``kernel_layout`` do not apply
      and are refused (``kernel_layout`` is kept with a ``pattern``).
    accumulator_dtype: dtype of the moving averages :math:`v` and :math:`r`
      (default: the params'); :math:`z` and :math:`B` stay in the params' dtype,
      since a ``bfloat16`` running sum stops growing.
    pattern: ``(N, M)`` or ``"N:M"``: the prox keeps at most N non-zeros in every group
      of M consecutive weights along each masked leaf's input dimension, those of largest
      :math:`(|z| - \lambda B)_+` (see :func:`soft_threshold`). With ``sparsity``, the
      target counts the pattern's zeros too.
    pattern_axes: where each leaf's input dimension lies, see :func:`soft_threshold`
      (default: ``kernel_layout``'s: axis 0 of a 2-D kernel, the I axis of a 4-D conv).
    erk_shapes: with a sparsity target and ``scope="erk"``, the shape ERK reads each leaf as, e.g.
      ``(in, heads * head_dim)`` for an attention kernel stored ``(in, heads, head_dim)``
      (see :func:`layer_densities`); default its own.

  Returns:
    An ``optax.GradientTransformationExtraArgs`` that needs ``params``.

  Example:
    >>> import jax, jax.numpy as jnp, optax, sparse_optax as so
    >>> n = 100
    >>> tx = so.xrda(so.cosine_decay(0.5, n), so.cosine_averaging(n), l1=0.05,
    ...              momentum_timescale=1.0)
    >>> params = {"w": jnp.array([[1.0, 0.01, -2.0]])}
    >>> loss = lambda p: jnp.sum((p["w"] - jnp.array([[1.0, 0.0, -2.0]])) ** 2)
    >>> state, update = tx.init(params), jax.jit(tx.update)
    >>> for _ in range(n):
    ...   updates, state = update(jax.grad(loss)(params), state, params)
    ...   params = optax.apply_updates(params, updates)
    >>> params["w"][0, 1]  # the small weight is exactly zero
    Array(0., dtype=float32)

    Asking for a third of the weights to be zero instead:

    >>> tx = so.xrda(so.cosine_decay(0.5, n), so.cosine_averaging(n), sparsity=1 / 3,
    ...              momentum_timescale=1.0)
    >>> params = {"w": jnp.array([[1.0, 0.01, -2.0]])}
    >>> state, update = tx.init(params), jax.jit(tx.update)
    >>> for _ in range(n):
    ...   updates, state = update(jax.grad(loss)(params), state, params)
    ...   params = optax.apply_updates(params, updates)
    >>> params["w"] == 0
    Array([[False,  True, False]], dtype=bool)

  References:
    Siegel, Chen, Xu, Training Sparse Neural Networks using Compressed Sensing, 2020.
  """
  _checks.check_hparam("weight_decay", weight_decay)
  if pattern is not None and pattern_axes is None and kernel_layout is not None:
    pattern_axes = kernel_layout  # the pattern reads the same layout
  if weights is not None:
    given = [name for name, value in (("maximum_factor", maximum_factor), ("beta", beta),
                                      ("magnitude_timescale", magnitude_timescale),
                                      ("structure", structure),
                                      ("kernel_layout", None if pattern else kernel_layout))
             if value is not None]
    if given:
      raise ValueError(
          f"{_checks.caller()}: {', '.join(given)} configure the log-l1 weighting, which "
          "weights= replaces; give one or the other.")
  else:
    weights = log_l1_weights(
        learning_rate,
        momentum_timescale if magnitude_timescale is None else magnitude_timescale,
        maximum_factor=maximum_factor,
        beta=beta,
        structure="unstructured" if structure is None else structure,
        kernel_layout="HWIO" if kernel_layout is None else kernel_layout,
        mask=mask,
        accumulator_dtype=accumulator_dtype,
    )
  return optax.chain(
      optax.add_decayed_weights(weight_decay),
      scale_by_timescale_momentum(learning_rate, momentum_timescale, accumulator_dtype),
      optax.scale_by_learning_rate(learning_rate),
      dual_averaging(averaging, _point=True),
      _prox(l1, learning_rate, averaging, weights, mask, sparsity, scope, solve_every, pattern,
            pattern_axes, point=True, erk_shapes=erk_shapes),
  )


@_checks.names_errors
def rda(
    gamma: optax.ScalarOrSchedule,
    l1: optax.ScalarOrSchedule | None = None,
    *,
    sparsity: optax.ScalarOrSchedule | None = None,
    scope: str = "global",
    solve_every: int | None = _target.SOLVE_EVERY,
    weight_decay: optax.ScalarOrSchedule = 0.0,
    weights: _types.Weighting | None = None,
    mask: _types.Mask | None = None,
    pattern: tuple[int, int] | str | None = None,
    pattern_axes: Any = None,
    erk_shapes: Any = None,
) -> optax.GradientTransformationExtraArgs:
  r"""Xiao's regularized dual averaging around the initial point (He et al., 2020).

  .. math::
    G_n = \sum_{k \le n} g_k, \quad \beta_n = \gamma\sqrt{n}, \quad
    \theta_{n+1} = \operatorname{soft}\!\left(\theta_0 - G_n/\beta_n,\;
    \lambda n/\beta_n\right),

  i.e. :func:`dual_averaging` with ``center="initial"``,
  :math:`\alpha_n = \sqrt{(n-1)/n}` and :math:`s_n = 1/(\gamma\sqrt n)`, and the
  same :math:`\alpha, s` in :func:`accumulated_threshold` (so the threshold is
  :math:`\lambda\sqrt{n}/\gamma`). Initialise away from zero (zero init
  cannot train). Follow with :func:`freeze_zeros` for adaptive sparse
  retraining.

  Args:
    gamma: :math:`\gamma > 0`.
    l1: :math:`\lambda \ge 0`; or give ``sparsity`` (see :func:`xrda`).
    sparsity: the fraction of zeros wanted; ``scope`` and ``solve_every`` as in
      :func:`xrda`.
    scope: see :func:`xrda`.
    solve_every: see :func:`xrda`.
    weight_decay: coupled L2 on every leaf.
    weights: l1 weights (default: :func:`uniform_l1_weights` of ``mask``).
    mask: the leaves with l1 (default: ``ndim >= 2``), as in :func:`xrda`.
    pattern: an N:M pattern for the prox, as in :func:`xrda`.
    pattern_axes: see :func:`xrda`.
    erk_shapes: see :func:`xrda`.

  Returns:
    An ``optax.GradientTransformationExtraArgs`` that needs ``params``.

  Example:
    >>> import jax.numpy as jnp, optax, sparse_optax as so
    >>> tx = so.rda(gamma=1.0, l1=0.1)
    >>> params = jnp.array([[0.05, 1.0]])
    >>> state = tx.init(params)
    >>> updates, state = tx.update(jnp.zeros((1, 2)), state, params)
    >>> optax.apply_updates(params, updates)  # soft(θ0, λ·1/γ)
    Array([[0. , 0.9]], dtype=float32)

  References:
    Xiao, Dual Averaging Methods for Regularized Stochastic Learning, 2010;
    He, Jia, Xu, Zhang & Zhao, Make l1 Regularization Effective in Training Sparse CNN, 2020.
  """
  _checks.check_hparam("weight_decay", weight_decay)
  step, alpha = rda_step_size(gamma), rda_averaging()
  return optax.chain(
      optax.add_decayed_weights(weight_decay),
      optax.scale_by_learning_rate(step),
      dual_averaging(alpha, center="initial", _point=True),
      _prox(l1, step, alpha, _weights_or_uniform(weights, mask), mask, sparsity, scope,
            solve_every, pattern, pattern_axes, point=True, erk_shapes=erk_shapes),
  )


@_checks.names_errors
def prox_sgd(
    learning_rate: optax.ScalarOrSchedule,
    l1: optax.ScalarOrSchedule | None = None,
    *,
    sparsity: optax.ScalarOrSchedule | None = None,
    scope: str = "global",
    solve_every: int | None = _target.SOLVE_EVERY,
    momentum: float | None = None,
    nesterov: bool = False,
    weight_decay: optax.ScalarOrSchedule = 0.0,
    weights: _types.Weighting | None = None,
    mask: _types.Mask | None = None,
    pattern: tuple[int, int] | str | None = None,
    pattern_axes: Any = None,
    erk_shapes: Any = None,
) -> optax.GradientTransformationExtraArgs:
  r"""Proximal SGD: an ``optax.sgd`` step, then soft-thresholding by :math:`\lambda s_n w`.

  .. math::
    \theta_{n+1} = \operatorname{soft}(\theta_n + u_n,\; \lambda s_n w_n),

  with :math:`u_n` the (momentum) SGD step and :math:`w` the l1 weights (plain
  l1 on leaves with ``ndim >= 2`` by default).

  Args:
    learning_rate: :math:`s_n`.
    l1: :math:`\lambda \ge 0`; or give ``sparsity`` (see :func:`xrda`): then
      each step keeps the weights of largest :math:`|\theta + u| / (s_n w)`.
    sparsity: the fraction of zeros wanted.
    scope: see :func:`xrda`.
    solve_every: see :func:`xrda`.
    momentum: heavy-ball momentum of ``optax.sgd`` (``None``: none).
    nesterov: Nesterov momentum.
    weight_decay: coupled L2 on every leaf.
    weights: l1 weights (e.g. :func:`log_l1_weights`; default
      :func:`uniform_l1_weights` of ``mask``).
    mask: the leaves with l1 (default: ``ndim >= 2``), as in :func:`xrda`.
    pattern: an N:M pattern for the prox, as in :func:`xrda`; with ``l1=0``, each step keeps
      the N largest :math:`|\theta + u|` of every group.
    pattern_axes: see :func:`xrda`.
    erk_shapes: see :func:`xrda`.

  Returns:
    An ``optax.GradientTransformationExtraArgs`` that needs ``params``.

  Example:
    >>> import jax.numpy as jnp, optax, sparse_optax as so
    >>> tx = so.prox_sgd(0.1, l1=1.0)
    >>> params = jnp.array([[0.05, 1.0]])
    >>> state = tx.init(params)
    >>> updates, state = tx.update(jnp.zeros((1, 2)), state, params)
    >>> optax.apply_updates(params, updates)
    Array([[0. , 0.9]], dtype=float32)
  """
  _checks.check_hparam("weight_decay", weight_decay)
  return optax.chain(
      optax.add_decayed_weights(weight_decay),
      optax.sgd(learning_rate, momentum=momentum, nesterov=nesterov),
      _prox(l1, learning_rate, 0.0, _weights_or_uniform(weights, mask), mask, sparsity, scope,
            solve_every, pattern, pattern_axes, erk_shapes=erk_shapes),
  )
