"""Sparsity targets: the l1 strength that leaves a chosen fraction of the weights at zero.

The soft-threshold step zeroes a weight where :math:`|\\hat\\theta_i| \\le \\lambda t_i`
(:math:`t` the threshold's scale: xRDA's accumulated :math:`B`, proximal SGD's
:math:`s_n w`). The number of zeros is a non-decreasing step function of
:math:`\\lambda`, so the :math:`\\lambda` that leaves :math:`k` zeros is the
:math:`k`-th smallest ratio :math:`|\\hat\\theta_i| / t_i`. It is found here by
bisection on the bits of a float32 :math:`\\lambda` (non-negative floats order like
their bit patterns): 31 passes of a count, each a sum reduction that shards like the
params, never a sort or a gather of the tree.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from sparse_optax import _checks
from sparse_optax import _dynamic_sparse

SCOPES = ("global", "layer", "erk")
_MAX_BITS = 0x7F7FFFFF  # the largest finite float32
_BISECTIONS = 31  # ceil(log2(_MAX_BITS)): the exact k-th ratio
_MAX_FACTOR = 4.0  # feedback moves λ by at most this factor an update
SOLVE_EVERY = 1000  # default steps between exact solves (benchmarks/target_control.py)
TOLERANCE = 0.25  # default |log(density / target)| that calls a solve between them
GAIN = 0.5  # default exponent of the feedback between solves


def check_no_control(scope: str, solve_every: Any, tolerance: Any = TOLERANCE,
                     gain: Any = GAIN) -> None:
  """Refuses, by name, the target's control arguments set to other than their defaults where
  there is no target (they would mean nothing). A value equal to its default passes: it cannot
  be told from the default, which ``optax.inject_hyperparams`` hands over as a value."""
  given = ["scope"] if scope != "global" else []
  for name, value, default in (("solve_every", solve_every, SOLVE_EVERY),
                               ("tolerance", tolerance, TOLERANCE), ("gain", gain, GAIN)):
    if value is None or (_checks.is_concrete(value) and np.any(np.asarray(value) != default)):
      given.append(name)
  if given:
    raise ValueError(f"{_checks.caller()}: {' and '.join(given)} "
                     f"{'says' if len(given) == 1 else 'say'} how a sparsity target is met; "
                     "without sparsity= there is none.")


class SparsityTargetState(NamedTuple):
  """Per group (one for ``scope="global"``, one per penalised leaf otherwise)."""
  l1: jax.Array  # float32 (groups,): the strength λ used at the last step
  density: jax.Array  # float32 (groups,): the fraction non-zero in the params it received
  # float32 (groups, CHUNKS): non-zeros per chunk of the group's leaves, one chunk recounted
  # a step (see densities_of)
  chunk_nonzeros: jax.Array
  solves: jax.Array  # int32 (): exact solves so far (what the target has cost)
  solved_for: jax.Array  # float32 (groups,): the target density of the last solve
  solved_at: jax.Array  # int32 (): the step of the last solve


CHUNKS = 8  # the density is recounted an eighth of the weights a step


def _chunks(x: Any) -> tuple[jax.Array | None, jax.Array | None]:
  """A leaf as ``CHUNKS`` equal rows and the remainder, each None where empty (an empty
  slice of a sharded array fails outside jit)."""
  flat = jnp.reshape(x, -1)
  whole = (flat.size // CHUNKS) * CHUNKS
  return (flat[:whole].reshape(CHUNKS, -1) if whole else None,
          flat[whole:] if whole < flat.size else None)


class Groups(NamedTuple):
  """Which penalised leaves share one λ, and their sizes (static)."""
  of_leaf: tuple[int | None, ...]  # per flattened leaf: its group, None outside the mask
  sizes: tuple[int, ...]  # elements per group


def check_target(sparsity: Any, scope: str, solve_every: Any, gain: Any,
                 tolerance: Any) -> None:
  """Refuses a target outside [0, 1), unknown names and bad control settings."""
  _checks.check_hparam("sparsity", sparsity, at_most_one=True)
  if not callable(sparsity) and _checks.is_concrete(sparsity):
    if np.any(np.asarray(sparsity, np.float64) >= 1.0):
      raise ValueError(
          f"sparsity must lie in [0, 1) (1 would zero every weight); got {sparsity!r}.")
  if scope not in SCOPES:
    raise ValueError(f"scope must be one of {SCOPES}; got {scope!r}.")
  if solve_every is not None:
    _checks.check_step("solve_every", solve_every, minimum=1)
  _checks.check_hparam("gain", gain, positive=True, allow_schedule=False)
  _checks.check_hparam("tolerance", tolerance, allow_schedule=False)


def groups(selected: list[bool], leaves: list[Any], scope: str) -> Groups:
  """The groups of the penalised leaves: all together (global) or one each (layer, erk)."""
  sizes = [math.prod(np.shape(x)) for x in leaves]
  if scope == "global":
    of_leaf = tuple(0 if s else None for s in selected)
    total = sum(n for n, s in zip(sizes, selected) if s)
    return Groups(of_leaf, (total,) if any(selected) else ())
  idx = [i for i, s in enumerate(selected) if s]
  of_leaf = [None] * len(leaves)
  for g, i in enumerate(idx):
    of_leaf[i] = g
  return Groups(tuple(of_leaf), tuple(sizes[i] for i in idx))


def init(params: list[Any], grouping: Groups) -> SparsityTargetState:
  """λ = 0, and each chunk's non-zeros counted in the initial params."""
  n = len(grouping.sizes)
  chunks = [jnp.zeros((CHUNKS,), jnp.float32) for _ in range(n)]
  for x, g in zip(params, grouping.of_leaf):
    rows = None if g is None else _chunks(x)[0]
    if rows is not None:
      chunks[g] = chunks[g] + jnp.sum(rows != 0, axis=1, dtype=jnp.float32)
  return SparsityTargetState(jnp.zeros((n,), jnp.float32), jnp.ones((n,), jnp.float32),
                             jnp.stack(chunks) if chunks else jnp.zeros((0, CHUNKS)),
                             jnp.zeros([], jnp.int32), jnp.ones((n,), jnp.float32),
                             jnp.zeros([], jnp.int32))


def target_densities(sparsity_value: jax.Array, scope: str, shapes: list[tuple[int, ...]],
                     grouping: Groups) -> jax.Array:
  """(groups,) float32: the fraction each group should keep non-zero; under ERK each leaf read
  as its entry of ``shapes`` (per flattened leaf: ``_dynamic_sparse.erk_shapes_of``)."""
  s = jnp.clip(jnp.asarray(sparsity_value, jnp.float32), 0.0, 1.0)
  if scope != "erk":
    return jnp.full((len(grouping.sizes),), 1.0 - s)
  shapes = [v for v, g in zip(shapes, grouping.of_leaf) if g is not None]
  if not shapes:
    return jnp.zeros((0,), jnp.float32)
  return jnp.stack(_dynamic_sparse.erk_densities(shapes, 1.0 - s)).astype(jnp.float32)


def leaf_thresholds(lam: jax.Array, scales: list[Any], leaves: list[Any], grouping: Groups
                    ) -> list[Any]:
  """Per leaf: λ of its group times its scale, in the leaf's dtype (None outside the mask)."""
  return [None if g is None else (lam[g].astype(x.dtype) * jnp.asarray(t, x.dtype)).astype(x.dtype)
          for x, t, g in zip(leaves, scales, grouping.of_leaf)]


def _count(predicate: jax.Array) -> jax.Array:
  """How many elements are True, as an int32.

  A float32 sum (XLA:CPU reduces a float sum of a comparison ~1.5x faster than an int32 one),
  exact for up to 2^24 elements, so larger leaves are summed in rows of 2^20 first.
  """
  flat = predicate.reshape(-1).astype(jnp.float32)
  if flat.size <= 2 ** 24:
    return jnp.sum(flat).astype(jnp.int32)
  rows = -(-flat.size // 2 ** 20)
  flat = jnp.pad(flat, (0, rows * 2 ** 20 - flat.size))
  return jnp.sum(jnp.sum(flat.reshape(rows, 2 ** 20), axis=1).astype(jnp.int32))


def _group_sums(per_leaf: list[jax.Array | None], grouping: Groups) -> jax.Array:
  """(groups,) float32 of per-leaf int32 counts (float32: no int64 without x64)."""
  totals = [jnp.zeros([], jnp.float32) for _ in grouping.sizes]
  for value, g in zip(per_leaf, grouping.of_leaf):
    if g is not None:
      totals[g] = totals[g] + value.astype(jnp.float32)
  return jnp.stack(totals) if totals else jnp.zeros((0,), jnp.float32)


def densities_of(params: list[Any], grouping: Groups, chunk_nonzeros: jax.Array,
                 count: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(groups,) float32 density of the params, and the updated per-chunk counts.

  Counting every weight at every step would cost, on XLA:CPU, about half of xrda's update
  (a reduction there runs far below memory speed): each leaf is cut into ``CHUNKS`` equal
  chunks (plus a remainder of fewer than ``CHUNKS`` weights, counted every step) and one chunk
  is recounted a step. The density is exact once the params have held still for ``CHUNKS``
  steps, and a mix of the last ``CHUNKS`` steps' params otherwise.
  """
  j = count % CHUNKS
  fresh = [None] * len(params)
  rest = [None] * len(params)
  for i, (x, g) in enumerate(zip(params, grouping.of_leaf)):
    if g is None:
      continue
    rows, remainder = _chunks(x)
    fresh[i] = (jnp.zeros([], jnp.int32) if rows is None else
                _count(jax.lax.dynamic_index_in_dim(rows, j, keepdims=False) != 0))
    rest[i] = jnp.zeros([], jnp.int32) if remainder is None else _count(remainder != 0)
  row = _group_sums(fresh, grouping)
  chunk_nonzeros = chunk_nonzeros.at[:, j].set(row) if row.size else chunk_nonzeros
  nonzeros = jnp.sum(chunk_nonzeros, axis=1) + _group_sums(rest, grouping)
  return nonzeros / jnp.asarray(grouping.sizes, jnp.float32), chunk_nonzeros


def _ratio(x: jax.Array, t: Any) -> jax.Array:
  """|x| / t in float32: the strength at which the prox zeroes each element (0 where x is 0,
  inf where only x is not)."""
  a = jnp.abs(x).astype(jnp.float32)
  t = jnp.asarray(t, jnp.float32)
  return jnp.where(a == 0, 0.0, a / jnp.broadcast_to(t, a.shape))


def _zeros(q: jax.Array, lam: jax.Array, pattern: Any) -> jax.Array:
  """The zeros the prox leaves at strength ``lam`` in a leaf of ratios ``q``: those with
  ratio <= lam, and with an N:M ``pattern`` ``(n, m, axes)`` also all but N of each group's
  survivors (a group keeps min(N, its count above lam), non-increasing in lam)."""
  if pattern is None:
    return _count(q <= lam)
  n, m, axes = pattern
  k = math.prod(q.shape[a] for a in axes)
  grouped = q.shape[:axes[0]] + (k // m, m) + q.shape[axes[-1] + 1:]
  alive = jnp.sum((q > lam).reshape(grouped).astype(jnp.int32), axis=axes[0] + 1)
  return (q.size - jnp.sum(jnp.minimum(alive, n))).astype(jnp.int32)


def pattern_zeros(leaves: list[Any], grouping: Groups, axes: list[Any],
                  n_m: tuple[int, int] | None) -> np.ndarray | None:
  """(groups,) the zeros an N:M pattern leaves at λ = 0 (M − N of every M weights of each
  patterned leaf; more where weights are exactly 0); None without a pattern."""
  if n_m is None:
    return None
  n, m = n_m
  zeros = np.zeros(len(grouping.sizes), np.float64)
  for x, g, a in zip(leaves, grouping.of_leaf, axes):
    if g is not None and a is not None:
      zeros[g] += math.prod(x.shape) // m * (m - n)
  return zeros


def solve(candidates: list[Any], scales: list[Any], grouping: Groups, densities: jax.Array,
          patterns: list[Any] | None = None) -> jax.Array:
  """(groups,) float32: per group, the strength whose prox keeps at most ``densities``.

  It is the k-th smallest ratio :math:`|\\hat\\theta_i| / t_i` (k the zeros wanted), found by
  bisection on float32 bit patterns: ``hi`` always zeroes at least k (or is the largest
  finite float), ``lo`` fewer; 31 halvings leave them adjacent. The ratios are computed once,
  so each halving reads one array. λ is raised by 2^-20 so that the prox, which compares
  :math:`|\\hat\\theta|` with the rounded product :math:`\\lambda t`, zeroes the k-th too.
  """
  sizes = jnp.asarray(grouping.sizes, jnp.float32)
  wanted = jnp.floor((1.0 - densities) * sizes)
  patterns = [None] * len(candidates) if patterns is None else patterns
  ratios = [None if g is None else _ratio(x, t)
            for x, t, g in zip(candidates, scales, grouping.of_leaf)]

  def body(_, bounds):
    lo, hi = bounds
    mid = lo + (hi - lo) // 2
    lam = jax.lax.bitcast_convert_type(mid, jnp.float32)
    zeros = _group_sums([None if g is None else _zeros(q, lam[g], pat)
                         for q, g, pat in zip(ratios, grouping.of_leaf, patterns)], grouping)
    enough = zeros >= wanted
    return jnp.where(enough, lo, mid), jnp.where(enough, mid, hi)

  n = len(grouping.sizes)
  lo = jnp.zeros((n,), jnp.int32)
  hi = jnp.full((n,), _MAX_BITS, jnp.int32)
  _, hi = jax.lax.fori_loop(0, _BISECTIONS, body, (lo, hi))
  lam = jax.lax.bitcast_convert_type(hi, jnp.float32)
  lam = jnp.minimum(lam * (1.0 + 2.0 ** -20), jnp.finfo(jnp.float32).max)
  return jnp.where(wanted > 0, lam, 0.0)


def strengths(state: SparsityTargetState, count: jax.Array, densities: jax.Array,
              reached: jax.Array, candidates: Callable[[], list[Any]], scales: list[Any],
              grouping: Groups, *,
              solve_every: Any, gain: Any, tolerance: Any, initial: jax.Array | None,
              patterns: list[Any] | None = None,
              pattern_zeros: np.ndarray | None = None) -> tuple[jax.Array, jax.Array]:
  """(groups,) float32: this step's λ per group, solved exactly or moved by feedback; and
  whether it was solved (a bool).

  Feedback, once a rotation of the chunk counts (see densities_of) that saw no solve:
  λ ← λ (d / d*)^gain, d the density of the params over the last ``CHUNKS`` steps, d* this
  step's target (with the log-density as the error, a group far from its target and one at
  99.6% sparsity move alike). With ``solve_every`` an int k, an exact solve replaces it every
  k steps, and at once where a group's target has moved by more than ``tolerance`` in
  log-density since the last solve, or where its :math:`|\\log(d/d^*)|` exceeds
  ``tolerance`` at such a rotation: a guard against feedback's large excursions (an overshoot
  from a dense start). A solve also runs at step 0 (at ``solve_every`` when ``initial``
  starts λ) and wherever λ is 0 (feedback cannot move it), except in a group whose N:M
  pattern alone leaves the zeros wanted (``pattern_zeros``, per group: see
  :func:`pattern_zeros`): λ = 0 is the exact answer there, and nothing more runs. ``candidates`` builds the values solved on
  (called in the solve's branch only); ``patterns``, per leaf, an N:M pattern's
  ``(n, m, axes)`` or None (see :func:`_zeros`).
  """
  sparse_wanted = densities < 1.0
  n = jnp.asarray(grouping.sizes, jnp.float32)
  met = (jnp.zeros(n.shape, bool) if pattern_zeros is None else
         jnp.floor((1.0 - densities) * n) <= jnp.asarray(pattern_zeros, jnp.float32))
  log_error = jnp.log(jnp.maximum(reached, 1.0 / n) / jnp.maximum(densities, 1.0 / n))
  factor = jnp.clip(jnp.exp(log_error * jnp.asarray(gain, jnp.float32)),
                    1.0 / _MAX_FACTOR, _MAX_FACTOR)
  # Once a rotation of the chunk counts, and only if no solve ran during it: then each chunk
  # was counted since the last change of λ, and the density is that of the last λ alone (a
  # density that lags λ makes the feedback oscillate where the count is steep in λ, as RDA's
  # is, and would call solve after solve).
  rotated = (count % CHUNKS == 0) & (count - state.solved_at >= CHUNKS)
  carried = jnp.where(rotated, state.l1 * factor, state.l1)
  if initial is None:
    due = jnp.asarray(count == 0)
  else:
    carried = jnp.where(count == 0, jnp.broadcast_to(initial, carried.shape), carried)
    due = jnp.asarray(False)
  if solve_every is not None:
    due = due | ((count > 0) & (count % solve_every == 0))
    tol = jnp.asarray(tolerance, jnp.float32)
    # (Zeros beyond the target at λ = 0 are the pattern's: no solve undoes them.)
    strayed = sparse_wanted & (jnp.abs(log_error) > tol) & ~(met & (carried <= 0))
    moved = sparse_wanted & ~met & (jnp.abs(jnp.log(jnp.maximum(densities, 1.0 / n)
                                             / jnp.maximum(state.solved_for, 1.0 / n))) > tol)
    due = due | ((count > 0) & ((rotated & jnp.any(strayed)) | jnp.any(moved)))
  # Feedback cannot move λ from 0: a solve wherever λ is 0, except where an N:M pattern's own
  # zeros meet the target, λ = 0 the exact answer for good.
  due = due | jnp.any(sparse_wanted & (carried <= 0) & ~met)
  lam = jax.lax.cond(due, lambda: solve(candidates(), scales, grouping, densities, patterns),
                     lambda: carried.astype(jnp.float32))
  return jnp.where(sparse_wanted, lam, 0.0), due


@_checks.names_errors
def target_state(opt_state: Any) -> SparsityTargetState | None:
  """The sparsity target's state inside an optimizer state (``None`` if it has none).

  Its ``l1`` is the strength used at the last step and ``density`` the density of
  the params that step received, one entry per group.

  Example:
    >>> import jax.numpy as jnp, optax, sparse_optax as so
    >>> tx = so.prox_sgd(0.1, sparsity=0.5)
    >>> w = jnp.array([[3.0, -0.2, 1.0, 0.5]])
    >>> state = tx.init(w)
    >>> for _ in range(2):
    ...   updates, state = tx.update(jnp.zeros_like(w), state, w)
    ...   w = optax.apply_updates(w, updates)
    >>> so.target_state(state).density  # of the params the second step received
    Array([0.5], dtype=float32)
  """
  found = [x for x in jax.tree.leaves(opt_state, is_leaf=lambda x: isinstance(
      x, SparsityTargetState)) if isinstance(x, SparsityTargetState)]
  if len(found) > 1:
    raise ValueError(f"{_checks.caller()}: the optimizer state holds {len(found)} sparsity "
                     "targets; read them from the state's fields.")
  return found[0] if found else None
