"""One table of every exported optimizer through the same checks (as optax's alias_test)."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import sparse_optax as so
from tests.optimizer_table import EXACT_ZEROS, IDS, OPTIMIZERS, TOTAL

TARGET = {
    "w": jnp.array([[1.0, -2.0, 0.0, 0.0, 0.5, 0.0]]),
    "k": jnp.zeros((3, 3, 2, 2)).at[:, :, 0, 0].set(1.0),
    "b": jnp.array([0.3, -0.3]),
}


def _loss(p):
  return sum(jnp.sum((p[k] - TARGET[k]) ** 2) for k in TARGET)


def _init(seed=0, dtype=jnp.float32):
  keys = jax.random.split(jax.random.key(seed), 3)
  return {k: (0.5 * jax.random.normal(key, v.shape)).astype(dtype)
          for key, (k, v) in zip(keys, TARGET.items())}


@pytest.mark.parametrize("name,factory,kwargs", OPTIMIZERS, ids=IDS)
def test_converges_on_parabola_with_exact_zeros(name, factory, kwargs):
  tx = factory(**kwargs)
  params = _init()
  state = tx.init(params)

  @jax.jit
  def step(p, s):
    u, s = tx.update(jax.grad(_loss)(p), s, p)
    return optax.apply_updates(p, u), s

  for _ in range(TOTAL):
    params, state = step(params, state)
  for k in TARGET:
    np.testing.assert_allclose(params[k], TARGET[k], atol=0.06, err_msg=f"{name}:{k}")
  # sparse methods land on exact zeros where the target is zero
  if name in EXACT_ZEROS:
    assert np.all(np.asarray(params["w"])[np.asarray(TARGET["w"]) == 0] == 0), name


@pytest.mark.parametrize("name,factory,kwargs", OPTIMIZERS, ids=IDS)
def test_no_recompilation_after_first_step(name, factory, kwargs):
  chex.clear_trace_counter()
  tx = factory(**kwargs)

  @jax.jit
  @chex.assert_max_traces(n=1)
  def step(p, s):
    u, s = tx.update(jax.grad(_loss)(p), s, p)
    return optax.apply_updates(p, u), s

  params = _init()
  state = tx.init(params)
  for _ in range(3):
    params, state = step(params, state)


@pytest.mark.parametrize("name,factory,kwargs", OPTIMIZERS, ids=IDS)
def test_same_result_under_inject_hyperparams(name, factory, kwargs):
  static = [k for k, v in kwargs.items() if isinstance(v, str)]
  injected = optax.inject_hyperparams(factory, static_args=static)(**kwargs)
  plain = factory(**kwargs)
  results = []
  for tx in (plain, injected):
    params = _init(1)
    state = tx.init(params)
    step = jax.jit(tx.update)
    for _ in range(5):
      u, state = step(jax.grad(_loss)(params), state, params)
      params = optax.apply_updates(params, u)
    results.append(params)
  for a, b in zip(jax.tree.leaves(results[0]), jax.tree.leaves(results[1])):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7, err_msg=name)


def test_inject_hyperparams_changes_take_effect_without_retracing():
  tx = optax.inject_hyperparams(so.xrda)(
      learning_rate=0.1, averaging=0.5, l1=0.0, momentum_timescale=1.0)
  chex.clear_trace_counter()
  params = _init(2)
  state = tx.init(params)

  @jax.jit
  @chex.assert_max_traces(n=1)
  def step(p, s):
    u, s = tx.update(jax.grad(_loss)(p), s, p)
    return optax.apply_updates(p, u), s

  p1, state = step(params, state)
  assert int(so.count_nonzeros(p1["w"])) == 6
  state.hyperparams["l1"] = state.hyperparams["l1"] + 10.0  # same aval: no retrace
  p2, state = step(p1, state)
  assert int(so.count_nonzeros(p2["w"])) == 0


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize("name,factory,kwargs", OPTIMIZERS, ids=IDS)
def test_dtype_is_kept(name, factory, kwargs, dtype):
  tx = factory(**kwargs)
  params = _init(3, dtype)
  state = tx.init(params)
  state_dtypes = jax.tree.map(lambda x: x.dtype, state)
  step = jax.jit(tx.update)
  for _ in range(2):
    grads = jax.grad(_loss)(params)
    updates, state = step(grads, state, params)
    params = optax.apply_updates(params, updates)
    chex.assert_trees_all_equal_dtypes(updates, params)
  assert all(x.dtype == dtype for x in jax.tree.leaves(params))
  assert jax.tree.map(lambda x: x.dtype, state) == state_dtypes


@pytest.mark.parametrize("name,factory,kwargs", OPTIMIZERS, ids=IDS)
def test_step_that_donates_params_and_state(name, factory, kwargs):
  tx = factory(**kwargs)
  params = _init(4)
  state = tx.init(params)
  step = jax.jit(lambda p, s: _apply(tx, p, s), donate_argnums=(0, 1))
  for _ in range(3):
    params, state = step(params, state)
  assert np.all(np.isfinite(np.asarray(params["w"])))


def _apply(tx, p, s):
  u, s = tx.update(jax.grad(_loss)(p), s, p)
  return optax.apply_updates(p, u), s
