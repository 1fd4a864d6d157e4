"""One table of every public transform, each in the chain a user writes, through the checks of
optax's own `optax/contrib/_common_test.py`, and the sparse checks of this library."""

import contextlib
import inspect

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import sparse_optax as so
from tests.optimizer_table import TRANSFORM_IDS, TRANSFORMS

SPARSE = [case for case in TRANSFORMS if case.strength is not None and case.finds_support]

# Convergence targets, one leaf of each kind: a vector (not masked by default), a matrix, an
# HWIO kernel. They start away from zero: zero is a fixed point of freeze_zeros and affine scaling.
GOAL = {
    "vector": jnp.array([1.0, -1.0, 1.0]),
    "matrix": jnp.array([[3.0, -2.0], [1.0, 4.0]]),
    "kernel": jnp.linspace(-1.5, 1.5, 3 * 3 * 2 * 2).reshape(3, 3, 2, 2) + 0.05,
}
START = jax.tree.map(lambda g: 0.5 * g + 0.25 * jnp.sign(g), GOAL)

# A target with zeros, for the sparse checks: whole kernels and channels are zero.
SPARSE_GOAL = {
    "w": jnp.array([[1.0, -2.0, 0.0, 0.0, 0.5, 0.0]]),
    "k": jnp.zeros((3, 3, 2, 2)).at[:, :, 0, 0].set(1.0),
    "b": jnp.array([0.3, -0.3]),
}


def _loss(goal):
  return lambda p: sum(jnp.sum((p[k] - goal[k]).astype(jnp.float32) ** 2) for k in goal)


def _tx(case, strength=None, factory=None, **overrides):
  kwargs = case.make(case.strength if strength is None else strength) | overrides
  return case.chain((factory or case.factory)(**kwargs))


def _step(tx, loss, **extra):
  def step(params, state):
    updates, state = tx.update(jax.grad(loss)(params), state, params, **extra)
    return optax.apply_updates(params, updates), state
  return step


def _train(tx, params, loss, steps):
  step = _step(tx, loss)
  carry, _ = jax.lax.scan(lambda c, _: (step(*c), None), (params, tx.init(params)), length=steps)
  return carry


def _sparse_start(seed=0, dtype=jnp.float32):
  keys = jax.random.split(jax.random.key(seed), 3)
  return {k: (0.5 * jax.random.normal(key, v.shape)).astype(dtype)
          for key, (k, v) in zip(keys, SPARSE_GOAL.items())}


@pytest.mark.parametrize("case", TRANSFORMS, ids=TRANSFORM_IDS)
def test_converges_at_zero_strength(case):
  params, _ = _train(_tx(case, 0.0), START, _loss(GOAL), 1500)
  for k in GOAL:
    np.testing.assert_allclose(params[k], GOAL[k], rtol=3e-2, atol=3e-2, err_msg=k)


@pytest.mark.parametrize("case", SPARSE, ids=[c.name for c in SPARSE])
def test_sparse_strength_zeroes_every_masked_leaf_and_spares_the_bias(case):
  params, _ = _train(_tx(case), _sparse_start(), _loss(SPARSE_GOAL), 300)
  dense, _ = _train(_tx(case, 0.0), _sparse_start(), _loss(SPARSE_GOAL), 300)
  for k in ("w", "k"):  # every leaf the default mask selects (ndim >= 2)
    zero = np.asarray(SPARSE_GOAL[k]) == 0
    got = np.abs(np.asarray(params[k]))
    if case.exact_zeros:
      assert np.mean(got[zero] == 0) >= case.zeroed, (k, got[zero])
      assert np.all(got[~zero] != 0), k
    else:  # shrinkage: closer to zero than the same chain without it
      assert got[zero].sum() < 0.9 * np.abs(np.asarray(dense[k]))[zero].sum(), k
    np.testing.assert_allclose(params[k][~zero], SPARSE_GOAL[k][~zero], atol=0.08, err_msg=k)
  if case.name != "lobster":  # the default mask leaves the bias alone: it converges as dense
    np.testing.assert_allclose(params["b"], dense["b"], atol=1e-3)


@pytest.mark.parametrize("case", TRANSFORMS, ids=TRANSFORM_IDS)
def test_extra_args_accepted_and_no_recompilation(case):
  tx = _tx(case)
  chex.clear_trace_counter()
  step = jax.jit(chex.assert_max_traces(_step(tx, _loss(GOAL), unexpected_extra_arg=1), n=1))
  params, state = START, tx.init(START)
  for _ in range(3):
    params, state = step(params, state)
  assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(params))


@pytest.mark.parametrize("case", TRANSFORMS, ids=TRANSFORM_IDS)
def test_inject_hyperparams_equals_the_plain_factory(case):
  kwargs = case.make(case.strength or 0.0)
  injected_factory = optax.inject_hyperparams(case.factory)
  results = []
  for tx in (_tx(case), _tx(case, factory=injected_factory)):
    results.append(_train(tx, START, _loss(GOAL), 5))
  (plain, _), (injected, state) = results
  chex.assert_trees_all_close(injected, plain, rtol=1e-6, atol=case.atol)
  inject_state = _find(state)
  numeric = {k for k, v in inspect.signature(case.factory).parameters.items()
             if isinstance(kwargs.get(k, v.default), (int, float)) and not isinstance(
                 kwargs.get(k, v.default), bool)}
  assert numeric <= set(inject_state.hyperparams), numeric - set(inject_state.hyperparams)


def _find(state):
  if hasattr(state, "hyperparams"):
    return state
  if isinstance(state, tuple):
    found = [f for f in map(_find, state) if f is not None]
    return found[0] if found else None
  return None


@contextlib.contextmanager
def _x64(enabled):
  if not enabled:
    yield
    return
  import jax.experimental  # pylint: disable=g-import-not-at-top
  if hasattr(jax.experimental, "enable_x64"):  # jax < 0.5
    context = jax.experimental.enable_x64()
  else:
    context = jax.enable_x64(True)
  with context:
    yield


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32", "float64"])
@pytest.mark.parametrize("case", TRANSFORMS, ids=TRANSFORM_IDS)
def test_dtypes_are_kept_and_the_state_is_stable_under_lax_cond(case, dtype):
  """Updates in the params' dtype; the state's dtypes and shapes unchanged by a step, which
  `lax.cond` between a step and no step requires (as optax's contrib tests do)."""
  with _x64(dtype == "float64"):
    dtype = jnp.dtype(dtype)
    tx = _tx(case)
    params = jax.tree.map(lambda x: x.astype(dtype), START)
    loss = _loss(GOAL)

    @jax.jit
    def step(params, state):
      grads = jax.grad(loss)(params)
      cond = jax.random.randint(jax.random.key(0), (), 0, 2) == 0  # not known at trace time
      updates, state = jax.lax.cond(cond, lambda: tx.update(grads, state, params),
                                    lambda: (jax.tree.map(jnp.zeros_like, params), state))
      chex.assert_trees_all_equal_dtypes(updates, params)
      return optax.apply_updates(params, updates), state

    state = tx.init(params)
    for _ in range(2):
      params, state = step(params, state)
    assert all(x.dtype == dtype for x in jax.tree.leaves(params))


@pytest.mark.parametrize("case", TRANSFORMS, ids=TRANSFORM_IDS)
def test_multisteps_accumulates_then_takes_one_step_on_the_mean(case):
  k = 4
  tx = _tx(case)
  multi = optax.MultiSteps(tx, every_k_schedule=k)
  grads = [jax.tree.map(lambda x, i=i: (i + 1.0) * jnp.cos(x + i), START) for i in range(k)]
  state = multi.init(START)
  update = jax.jit(multi.update)
  for i, g in enumerate(grads):
    updates, state = update(g, state, START)
    if i < k - 1:
      chex.assert_trees_all_equal(updates, jax.tree.map(jnp.zeros_like, START))
  mean = jax.tree.map(lambda *g: sum(g) / k, *grads)
  expected, _ = tx.update(mean, tx.init(START), START)
  chex.assert_trees_all_close(updates, expected, rtol=1e-5, atol=1e-6)


def _schedulable(factory, kwargs):
  """The float kwargs the factory annotates as `optax.ScalarOrSchedule`."""
  hints = inspect.signature(factory).parameters
  return {k: v for k, v in kwargs.items()
          if k in hints and "Schedule" in str(hints[k].annotation)
          and isinstance(v, float)}


@pytest.mark.parametrize("case", TRANSFORMS, ids=TRANSFORM_IDS)
def test_schedule_equal_to_a_constant_gives_the_same_steps(case):
  kwargs = case.make(case.strength or 0.0)
  scheduled = _schedulable(case.factory, kwargs)
  if not scheduled:
    pytest.skip("no float argument annotated as a schedule")
  as_schedules = {k: optax.constant_schedule(v) for k, v in scheduled.items()}
  constant, _ = _train(_tx(case), START, _loss(GOAL), 10)
  with_schedules, _ = _train(_tx(case, **as_schedules), START, _loss(GOAL), 10)
  chex.assert_trees_all_close(with_schedules, constant, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("case", TRANSFORMS, ids=TRANSFORM_IDS)
def test_donated_step_equals_the_undonated_one(case):
  tx = _tx(case)
  step = _step(tx, _loss(GOAL))
  plain = jax.jit(step)
  donated = jax.jit(step, donate_argnums=(0, 1))
  expected = got = (START, tx.init(START))
  got = jax.tree.map(jnp.copy, got)  # donation consumes the buffers
  for _ in range(3):
    expected = plain(*expected)
    got = donated(*got)
  # A donated buffer read after reuse is wrong by far more; some XLA versions fuse the two
  # programs differently, which moves the last bit.
  chex.assert_trees_all_close(got, expected, rtol=1e-6, atol=0)


def test_inject_hyperparams_changes_take_effect_without_retracing():
  tx = optax.inject_hyperparams(so.xrda)(
      learning_rate=0.1, averaging=0.5, l1=0.0, momentum_timescale=1.0)
  chex.clear_trace_counter()
  loss = _loss(SPARSE_GOAL)

  @jax.jit
  @chex.assert_max_traces(n=1)
  def step(p, s):
    u, s = tx.update(jax.grad(loss)(p), s, p)
    return optax.apply_updates(p, u), s

  params = _sparse_start(2)
  state = tx.init(params)
  p1, state = step(params, state)
  assert int(so.count_nonzeros(p1["w"])) == 6
  state.hyperparams["l1"] = state.hyperparams["l1"] + 10.0  # same aval: no retrace
  p2, state = step(p1, state)
  assert int(so.count_nonzeros(p2["w"])) == 0
