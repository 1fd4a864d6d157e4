"""The accumulated l1 threshold and the soft-threshold proximal step."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from sparse_optax import _checks
from sparse_optax import _dynamic_sparse
from sparse_optax import _nm
from sparse_optax import _reweighting
from sparse_optax import _target
from sparse_optax import _tree
from sparse_optax import _types


class AccumulatedThresholdState(NamedTuple):
  count: jax.Array  # int32
  # B, stored as the weighting's layout says: like the params (log-l1, unstructured), one
  # scalar (uniform weights), or one packed buffer (per kernel, per channel).
  accumulated: Any
  weights: Any  # the inner Weighting's state


@_checks.names_errors
def accumulated_threshold(
    l1: optax.ScalarOrSchedule,
    learning_rate: optax.ScalarOrSchedule,
    averaging: optax.ScalarOrSchedule = 0.0,
    weights: _types.Weighting | None = None,
) -> _types.Weighting:
  r"""The dual average of a (time-varying) weighted l1 penalty, as a threshold.

  .. math::
    B_{n+1} = \alpha_n B_n + s_n w_n, \quad B_0 = 0, \qquad
    \text{threshold} = \lambda_n B_{n+1}

  The weight of *each* step is folded into :math:`B`: the exact dual average of
  a regularizer that changes over time. With the same :math:`\alpha` as
  :func:`dual_averaging` this is the xRDA threshold; ``averaging=0`` gives the
  proximal-gradient threshold :math:`\lambda s_n w_n`.

  Args:
    l1: strength :math:`\lambda \ge 0` (float or schedule).
    learning_rate: step size :math:`s_n`.
    averaging: :math:`\alpha_n \in [0, 1]`.
    weights: a :class:`Weighting` giving :math:`w_n`; default
      :func:`uniform_l1_weights` (plain l1 on all leaves with ``ndim >= 2``).

  Returns:
    A :class:`Weighting` to pass to :func:`soft_threshold`.

  Example:
    >>> import jax.numpy as jnp, sparse_optax as so
    >>> thr = so.accumulated_threshold(l1=0.1, learning_rate=2.0, averaging=1.0)
    >>> params = jnp.ones((2, 2))
    >>> state = thr.init(params)
    >>> t, state = thr.update(state, params)
    >>> t, _ = thr.update(state, params)
    >>> t  # λ (s + s)
    Array(0.4, dtype=float32)
  """
  _checks.check_hparam("l1", l1)
  _checks.check_hparam("learning_rate", learning_rate)
  _checks.check_hparam("averaging", averaging, at_most_one=True)
  inner = _reweighting.uniform_l1_weights() if weights is None else weights

  layout = inner.layout
  if layout not in ("params", "scalar", "packed"):
    raise ValueError(f"Weighting.layout must be 'params', 'scalar' or 'packed'; got {layout!r}.")

  def weight_shapes(inner_state, params):
    shapes = jax.eval_shape(lambda: inner.update(inner_state, params)[0])
    return [(x.shape, x.dtype) for x in jax.tree.leaves(shapes)]

  def init_fn(params):
    _checks.check_float_params(params)
    inner_state = inner.init(params)
    if layout == "params":  # B shards like the params under optax.tree.map_params
      accumulated = optax.tree.zeros_like(params)
    elif layout == "scalar":
      accumulated = jnp.zeros([], _tree.state_dtype(params))
    else:
      accumulated = _tree.pack([jnp.zeros(shape, dtype) for shape, dtype
                                in weight_shapes(inner_state, params)], _tree.state_dtype(params))
    return AccumulatedThresholdState(jnp.zeros([], jnp.int32), accumulated, inner_state)

  def update_fn(state, params):
    _checks.require_params(params)
    if layout == "params":
      _checks.check_tree_match("params", params, state.accumulated, shapes=False)
    w, inner_state = inner.update(state.weights, params)
    s = _tree.value_at(learning_rate, state.count)
    alpha = _tree.value_at(averaging, state.count)
    lam = _tree.value_at(l1, state.count)

    def step(b, wi):
      return (alpha.astype(b.dtype) * b + s.astype(b.dtype) * wi).astype(b.dtype)

    if layout == "scalar":  # B = Σ (Π α) s, the same for every leaf; w is 0 or 1
      accumulated = step(state.accumulated, 1.0)
      threshold = jax.tree.map(lambda wi: (lam * accumulated * wi).astype(wi.dtype), w)
    elif layout == "params":
      accumulated = jax.tree.map(step, state.accumulated, w)
      threshold = jax.tree.map(lambda b: lam.astype(b.dtype) * b, accumulated)
    else:
      w_leaves, treedef = jax.tree.flatten(w)
      b_leaves = _tree.unpack(state.accumulated, [x.shape for x in w_leaves],
                              [x.dtype for x in w_leaves])
      b_leaves = [step(b, wi) for b, wi in zip(b_leaves, w_leaves)]
      accumulated = _tree.pack(b_leaves, state.accumulated.dtype)
      threshold = treedef.unflatten([lam.astype(b.dtype) * b for b in b_leaves])
    new_state = AccumulatedThresholdState(
        optax.safe_increment(state.count), accumulated, inner_state
    )
    return threshold, new_state

  return _types.Weighting(init_fn, update_fn, layout=layout)


class SoftThresholdState(NamedTuple):
  count: jax.Array  # int32
  threshold: Any  # the Weighting's state, () for a scalar threshold


class SoftThresholdTargetState(NamedTuple):
  """:func:`soft_threshold`'s state with a sparsity target (a class of its own, so that the
  state of a fixed strength, and the checkpoints holding it, keep their structure)."""
  count: jax.Array  # int32
  threshold: Any
  target: Any  # SparsityTargetState: the strength used at the last step, per group


def _soft(x: jax.Array, t: jax.Array) -> jax.Array:
  t = jnp.asarray(t, x.dtype)
  return jnp.sign(x) * jnp.maximum(jnp.abs(x) - t, 0)


@_checks.names_errors
def soft_threshold(
    threshold: optax.ScalarOrSchedule | _types.Weighting,
    mask: _types.Mask | None = None,
    *,
    sparsity: optax.ScalarOrSchedule | None = None,
    scope: str = "global",
    solve_every: int | None = _target.SOLVE_EVERY,
    tolerance: float = _target.TOLERANCE,
    gain: float = _target.GAIN,
    initial_l1: float | None = None,
    pattern: tuple[int, int] | str | None = None,
    pattern_axes: Any = None,
    erk_shapes: Any = None,
    _point: bool = False,
) -> optax.GradientTransformationExtraArgs:
  r"""Soft-threshold proximal step, the prox of :math:`\sum_i t_i |\theta_i|`.

  .. math::
    \hat\theta = \theta_n + u_n, \qquad
    \theta_{n+1} = \operatorname{sign}(\hat\theta)\,\max(|\hat\theta| - t_n, 0),

  and the output is :math:`\theta_{n+1} - \theta_n`. Weights it zeroes are
  exactly zero after ``optax.apply_updates``.

  ``threshold`` is a float or schedule (the same :math:`t_n` for every element
  of every leaf), or a :class:`Weighting` computed from :math:`\theta_n`:
  :func:`accumulated_threshold` with :func:`uniform_l1_weights` (plain l1) or
  :func:`log_l1_weights` (adaptive log-l1).

  * After ``optax.sgd(s)`` with ``threshold = lambda n: l1 * s(n)``: proximal SGD.
  * After :func:`dual_averaging` with the same :math:`\alpha` in
    :func:`accumulated_threshold`: xRDA / RDA.

  **Sparsity target.** With ``sparsity`` :math:`S_n`, the threshold is a scale
  and the step applies :math:`\lambda_n t_n`, with the strength
  :math:`\lambda_n` chosen so that the fraction :math:`S_n` of the weights in
  ``mask`` is exactly zero afterwards:

  .. math::
    \lambda_n = \min\{\lambda : \#\{i : |\hat\theta_i| \le \lambda t_i\} \ge
    \lfloor S_n N \rfloor\},

  the :math:`\lfloor S_n N\rfloor`-th smallest ratio :math:`|\hat\theta_i| / t_i`.
  After :func:`dual_averaging` this is magnitude pruning of the dual average
  :math:`z` rather than of the weights, with each ratio scaled by its l1 weight
  (the log-l1 weights decide which layers and kernels give up weights) and the
  survivors shrunk by :math:`\lambda_n t_i` as l1 shrinks them: a weight
  pruned at one step comes back when its dual average grows. Pass the
  threshold without a strength, e.g. ``accumulated_threshold(1.0, ...)``.

  The exact :math:`\lambda_n` takes 31 bisection passes of a count over the
  masked weights' ratios (sum reductions that shard like the params), so by
  default it is not solved at every step. An eighth of each leaf's weights is
  recounted a step; once all eight have been recounted since the last solve,
  the params' density :math:`d` moves :math:`\lambda` by feedback,
  :math:`\lambda \leftarrow \lambda (d/d^*_n)^{\text{gain}}` (the factor clipped to
  :math:`[1/4, 4]`), which follows a ramp or the weights' drift for the cost of one
  count. An exact solve replaces it every ``solve_every`` steps (1000 by default),
  at step 0, wherever a target rises from 0, and at once wherever the target has
  moved by more than ``tolerance`` in log-density since the last solve or a
  recount finds :math:`|\log(d/d^*_n)|` above it: a guard against feedback's
  large excursions (it overshoots a target held from a dense start), not a band
  the count is held in. ``state.target.solves`` counts the solves.
  ``solve_every=1`` is the exact quantile at every step (several times a plain
  update's cost on a large tree: ``benchmarks/target_cost.py``); ``None`` solves
  once, on the params' ratios :math:`|\theta_n| / t_n` (cheaper to reach than the
  candidates'), and then only follows.

  **N:M pattern.** With ``pattern=(N, M)`` (or ``"N:M"``) the step is the prox of the
  weighted l1 under at most N non-zeros in every group of M consecutive weights along each
  masked leaf's input dimension: in each group the N largest :math:`(|\hat\theta_i| - t_i)_+`
  keep their soft-thresholded value and the others are zero (ties to the lower index; with
  :math:`t = 0`, the N largest :math:`|\hat\theta_i|`). After :func:`dual_averaging`, the
  dual average decides which weights of a group survive. ``pattern_axes`` says where each
  leaf's input dimension lies: ``"HWIO"`` (the default: axis 0 of a 2-D (in, out) kernel, the
  I axis of a 4-D conv) or ``"OIHW"``, an int, a tuple of consecutive axes (flattened: (0, 1)
  for an attention output kernel (heads, head_dim, out)), None (no pattern on that leaf), or a
  tree or callable of those per leaf. Other ranks must be named; an input size that is not a
  multiple of M is an error naming the leaf. With ``sparsity``, the target counts every zero,
  the pattern's included: a target at or below :math:`1 - N/M` leaves the pattern alone, and a
  higher one raises :math:`\lambda` until that many weights are zero (a group keeps
  :math:`\min(N, \#\{|\hat\theta_i| > \lambda t_i\})`, non-increasing in :math:`\lambda`,
  so the bisection still applies).

  Args:
    threshold: :math:`t_n \ge 0`, a float, schedule or :class:`Weighting`;
      with ``sparsity``, the scale that :math:`\lambda_n` multiplies.
    mask: the leaves that are thresholded, a tree of bools (the params'
      structure or a prefix) or a callable ``params -> tree``; the others keep
      their update. Default: leaves with ``ndim >= 2`` (not biases or
      normalisation scales).
    sparsity: target fraction of zeros :math:`S_n \in [0, 1)`, a float or a
      schedule (e.g. :func:`polynomial_sparsity`, to ramp it up and hold it).
    scope: how the target is spread: ``"global"`` (one :math:`\lambda` for all
      masked leaves, so that the weights decide how sparse each leaf gets),
      ``"layer"`` (each leaf at :math:`S_n`, its own :math:`\lambda`) or
      ``"erk"`` (each leaf at its :func:`erk_densities` share).
    erk_shapes: with a sparsity target and ``scope="erk"``, the shape ERK reads each leaf as (see
      :func:`layer_densities`); default its own.
    solve_every: steps between exact solves (an int, 1000 by default; 1: every
      step; ``None``: at the start only, then feedback alone).
    tolerance: how far, in log-density, the target may move or the count stray
      before a solve runs at once (0.25 by default); with an int ``solve_every``
      only.
    gain: exponent of the feedback law between solves.
    initial_l1: the strength at step 0 instead of a solve; the first solve is
      then at step ``solve_every``.
    pattern: ``(N, M)`` or ``"N:M"``: at most N non-zeros per group of M (default: none).
    pattern_axes: each masked leaf's input axes for the pattern (see above).

  Returns:
    An ``optax.GradientTransformationExtraArgs`` that needs ``params``; put it
    last in a chain. With a target, ``state.target.l1`` is the strength used
    at the last step and ``state.target.density`` the density of the params
    that step received, one entry per group (one for ``"global"``, one per
    masked leaf otherwise), and ``state.target.solves`` the exact solves so
    far; :func:`target_state` finds them in a chain.

  Example:
    >>> import jax, jax.numpy as jnp, optax, sparse_optax as so
    >>> tx = optax.chain(optax.sgd(0.1), so.soft_threshold(0.05))
    >>> params = {"w": jnp.array([[1.0, 0.02, -0.5]]), "b": jnp.array([0.02])}
    >>> state = tx.init(params)
    >>> updates, state = tx.update(jax.tree.map(jnp.zeros_like, params), state, params)
    >>> optax.apply_updates(params, updates)  # the bias is not thresholded
    {'b': Array([0.02], dtype=float32), 'w': Array([[ 0.95,  0.  , -0.45]], dtype=float32)}

    With a target, two of the four weights are zero, whatever their scale:

    >>> tx = so.soft_threshold(1.0, sparsity=0.5)
    >>> w = jnp.array([[3.0, -0.2, -1.0, 0.5]])
    >>> updates, state = tx.update(jnp.zeros_like(w), tx.init(w), w)
    >>> optax.apply_updates(w, updates) == 0
    Array([[False,  True, False,  True]], dtype=bool)
    >>> state.target.l1  # the 2nd smallest |w|, so that it is zeroed too
    Array([0.5], dtype=float32)
  """
  is_weighting = isinstance(threshold, _types.Weighting)
  if not is_weighting:
    _checks.check_hparam("threshold", threshold)
  targeted = sparsity is not None
  if targeted:
    _target.check_target(sparsity, scope, solve_every, gain, tolerance)
    if initial_l1 is not None:
      _checks.check_hparam("initial_l1", initial_l1, allow_schedule=False)
  elif initial_l1 is not None:
    raise ValueError(f"{_checks.caller()}: initial_l1 starts a sparsity target's control; give "
                     "sparsity= too, or put the strength in the threshold.")
  else:
    _target.check_no_control(scope, solve_every, tolerance, gain)
  n_m = _nm.check_spec(pattern, pattern_axes)
  _dynamic_sparse.check_erk_shapes(erk_shapes, targeted and scope == "erk",
                                   'a sparsity target with scope="erk"')

  def patterned(params, selected):
    """Per flattened leaf: its pattern's input axes, None without one."""
    if n_m is None:
      return [None] * len(jax.tree.leaves(params))
    return _nm.leaf_axes(pattern_axes, params, selected, n_m[1])

  def grouping(params, selected):
    leaves, selected = jax.tree.leaves(params), jax.tree.leaves(selected)
    if leaves and not any(selected):
      raise ValueError(
          f"{_checks.caller()}: a sparsity target, but the mask selects no leaf of the params, "
          "so there is nothing to make sparse. Check mask= (default: leaves with ndim >= 2).")
    return _target.groups(selected, leaves, scope)

  def init_fn(params):
    _checks.check_float_params(params)
    selected = _checks.resolve_mask(mask, params)
    patterned(params, selected)  # its errors at init, not at the first step
    inner = threshold.init(params) if is_weighting else ()
    if targeted:
      if scope == "erk":
        _dynamic_sparse.erk_shapes_of(erk_shapes, params)  # its errors at init
      return SoftThresholdTargetState(jnp.zeros([], jnp.int32), inner, _target.init(
          jax.tree.leaves(params), grouping(params, selected)))
    return SoftThresholdState(jnp.zeros([], jnp.int32), inner)

  def update_fn(updates, state, params=None, **extra_args):
    del extra_args
    _checks.require_params(params)
    _checks.check_tree_match("updates", updates, params)
    if is_weighting:
      t, inner = threshold.update(state.threshold, params)
    else:
      value = _tree.value_at(threshold, state.count)
      t, inner = jax.tree.map(lambda _: value, params), ()

    selected = _checks.resolve_mask(mask, params)
    axes = patterned(params, selected)
    if targeted:
      leaves, treedef = jax.tree.flatten(params)
      groups = grouping(params, selected)
      # Built inside the solve's branch: XLA builds a cond's operands at every step, so
      # candidates made out here would cost a pass over the tree even where no solve runs
      # (and p + u as an operand makes XLA write u out every step: the named optimizers pass
      # the dual average itself, a buffer that exists anyway). Feedback alone solves (once)
      # on the params' ratios, cheaper to reach.
      flat_updates = treedef.flatten_up_to(updates)
      solved_on = (lambda: leaves) if solve_every is None else (
          (lambda: flat_updates) if _point else
          (lambda: [p + u for p, u in zip(leaves, flat_updates)]))
      scales = treedef.flatten_up_to(t)
      densities = _target.target_densities(
          _tree.value_at(sparsity, state.count), scope,
          _dynamic_sparse.erk_shapes_of(erk_shapes, params), groups)
      initial = None if initial_l1 is None else jnp.asarray(initial_l1, jnp.float32)
      reached, chunks = _target.densities_of(leaves, groups, state.target.chunk_nonzeros,
                                             state.count)
      lam, solved = _target.strengths(
          state.target, state.count, densities, reached, solved_on, scales, groups,
          solve_every=solve_every, gain=gain, tolerance=tolerance, initial=initial,
          patterns=[None if a is None else (*n_m, a) for a in axes],
          pattern_zeros=_target.pattern_zeros(leaves, groups, axes, n_m))
      target = _target.SparsityTargetState(
          lam, reached, chunks, state.target.solves + solved.astype(jnp.int32),
          jnp.where(solved | (state.count == 0), densities, state.target.solved_for),
          jnp.where(solved, state.count, state.target.solved_at))
      t = treedef.unflatten([s if thr is None else thr for s, thr in
                             zip(scales, _target.leaf_thresholds(lam, scales, leaves, groups))])

    def step(p, u, ti, m, a):
      c = u if _point else p + u
      if not m:
        return (c - p).astype(p.dtype) if _point else u
      if a is not None:
        return (_nm.prox(c, ti, n_m, a) - p).astype(p.dtype)
      return (_soft(c, ti) - p).astype(p.dtype)

    structure = jax.tree.structure(params)
    out = structure.unflatten([step(*leaf, a) for leaf, a in zip(zip(*(
        structure.flatten_up_to(tree) for tree in (params, updates, t, selected))), axes)])
    if targeted:
      return out, SoftThresholdTargetState(optax.safe_increment(state.count), inner, target)
    return out, SoftThresholdState(optax.safe_increment(state.count), inner)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
