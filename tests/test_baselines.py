"""Magnitude pruning / GMP, affine scaling and LOBSTER against hand-computed cases."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import sparse_optax as so


def _steps(tx, params, grads):
  state = tx.init(params)
  step = jax.jit(tx.update)
  out = []
  for g in grads:
    u, state = step(g, state, params)
    params = optax.apply_updates(params, u)
    out.append(params)
  return out, state


def test_magnitude_pruning_once_then_pinned():
  w = jnp.array([[0.1, -3.0, 0.2, 4.0, -0.05, 1.0]])
  params = {"w": w, "b": jnp.array([0.01])}
  tx = optax.chain(optax.sgd(1.0), so.prune_by_magnitude(0.5, begin_step=1, end_step=1))
  g = {"w": jnp.full((1, 6), -0.5), "b": jnp.array([0.0])}
  out, state = _steps(tx, params, [g] * 4)
  np.testing.assert_allclose(out[0]["w"], w + 0.5)  # step 0: not yet pruned
  # step 1 prunes the 3 smallest of w + 0.5 = [.6, -2.5, .7, 4.5, .45, 1.5]: .6, .7, .45
  want = np.array([[0.0, -2.0, 0.0, 5.0, 0.0, 2.0]])
  np.testing.assert_allclose(out[1]["w"], want)
  np.testing.assert_allclose(out[3]["w"], want + [[0, 1, 0, 1, 0, 1]])  # pinned, rest trains
  assert float(out[3]["b"][0]) == pytest.approx(0.01)  # biases are not pruned
  np.testing.assert_array_equal(state[1].keep["w"], [[False, True, False, True, False, True]])


def test_gradual_pruning_follows_cubic_schedule_and_only_shrinks():
  rng = np.random.default_rng(0)
  params = {"w": jnp.asarray(rng.normal(size=(20, 50)), jnp.float32)}
  sched = so.polynomial_sparsity(0.9, 0, 10)
  tx = optax.chain(optax.sgd(0.01),
                   so.prune_by_magnitude(sched, begin_step=0, end_step=10, frequency=2))
  grads = [{"w": jnp.asarray(rng.normal(size=(20, 50)), jnp.float32)} for _ in range(12)]
  out, _ = _steps(tx, params, grads)
  prev = np.ones((20, 50), bool)
  for t, p in enumerate(out):
    alive = np.asarray(p["w"]) != 0
    assert np.all(alive <= prev), t  # the mask only shrinks
    prev = alive
    last_pruned = t - t % 2
    expected = np.floor(np.float32(sched(last_pruned)) * np.float32(1000))  # as jitted
    assert 1000 - alive.sum() == expected, t


@pytest.mark.parametrize("end_step,frequency", [(15, 10), (10, 3), (7, 7)])
def test_gradual_pruning_reaches_its_final_sparsity_at_end_step(end_step, frequency):
  # The ramp need not be a whole number of periods: end_step itself always prunes.
  rng = np.random.default_rng(1)
  params = {"w": jnp.asarray(rng.normal(size=(10, 100)), jnp.float32)}
  sched = so.polynomial_sparsity(0.9, 0, end_step)
  tx = optax.chain(optax.sgd(0.0),
                   so.prune_by_magnitude(sched, begin_step=0, end_step=end_step,
                                         frequency=frequency))
  zero = {"w": jnp.zeros((10, 100))}
  out, _ = _steps(tx, params, [zero] * (end_step + 3))
  pruned = [1000 - int(np.count_nonzero(p["w"])) for p in out]
  assert pruned[end_step] == 900 and pruned[-1] == 900
  assert pruned[end_step - 1] < 900  # not before


def test_pruning_a_single_weight():
  # k = 1: exactly the smallest magnitude goes (k = 0 prunes nothing).
  params = {"w": jnp.array([[0.3, -0.1, 2.0, -4.0]])}
  for sparsity, want in ((0.25, [[0.3, 0.0, 2.0, -4.0]]), (0.2, [[0.3, -0.1, 2.0, -4.0]])):
    tx = optax.chain(optax.sgd(0.0), so.prune_by_magnitude(sparsity))
    out, _ = _steps(tx, params, [jax.tree.map(jnp.zeros_like, params)])
    np.testing.assert_array_equal(out[0]["w"], np.float32(want))


def test_global_scope_prunes_across_layers():
  params = {"small": jnp.full((2, 5), 0.1) * jnp.arange(1, 11).reshape(2, 5),
            "large": jnp.full((2, 5), 10.0) * jnp.arange(1, 11).reshape(2, 5)}
  zero = jax.tree.map(jnp.zeros_like, params)
  for scope, small_alive, large_alive in (("layer", 5, 5), ("global", 0, 10)):
    tx = optax.chain(optax.sgd(0.0), so.prune_by_magnitude(0.5, scope=scope))
    out, _ = _steps(tx, params, [zero])
    assert int(jnp.count_nonzero(out[0]["small"])) == small_alive, scope
    assert int(jnp.count_nonzero(out[0]["large"])) == large_alive, scope


@pytest.mark.parametrize("method", so.AFFINE_SCALING_METHODS)
def test_affine_scaling_preconditions_by_frozen_omega_squared(method):
  tau, p, period, lr = 0.1, 0.5, 3, 0.05
  rng = np.random.default_rng(1)
  theta = rng.normal(size=(4, 3))
  b = rng.normal(size=3)
  grads = [(rng.normal(size=(4, 3)), rng.normal(size=3)) for _ in range(7)]
  tx = optax.chain(so.scale_by_affine_scaling(method, tau=tau, p=p, period=period),
                   optax.sgd(lr))
  out, _ = _steps(tx, {"w": jnp.float32(theta), "b": jnp.float32(b)},
                  [{"w": jnp.float32(g), "b": jnp.float32(gb)} for g, gb in grads])
  omega_of = {"l1": lambda t: np.abs(t) + tau, "l2": lambda t: np.sqrt(t**2 + tau),
              "focuss": lambda t: np.abs(t) ** (2 - p) + tau}[method]
  for n, (g, gb) in enumerate(grads):
    if n % period == 0:
      omega = omega_of(theta)  # refreshed from the current params, then frozen
    theta = theta - lr * omega**2 * g
    b = b - lr * gb  # biases are not rescaled
    np.testing.assert_allclose(out[n]["w"], theta, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out[n]["b"], b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("method, leafwise, iterations",
                         [("l1", False, None), ("focuss", False, None), ("l1", True, None),
                          ("l1", True, 3)])
def test_greedy_affine_scaling_keeps_q_and_steps_in_q_space(method, leafwise, iterations):
  tau, p, period, lr, mu = 0.3, 0.5, 3, 0.05, 0.9
  rng = np.random.default_rng(3)
  names = ("a", "b", "bias")  # a, b re-weighted (ndim 2), in tree order; the bias is not
  theta = {"a": rng.normal(size=(4, 3)), "b": rng.normal(size=(3, 2)), "bias": rng.normal(size=2)}
  grads = [{k: rng.normal(size=v.shape) for k, v in theta.items()} for _ in range(10)]
  tx = so.affine_scaling(optax.sgd(lr, momentum=mu), method, tau=tau, p=p, period=period,
                         leafwise=leafwise, iterations=iterations)
  out, _ = _steps(tx, {k: jnp.float32(v) for k, v in theta.items()},
                  [{k: jnp.float32(v) for k, v in g.items()} for g in grads])
  f = {"l1": lambda t: np.abs(t) + tau, "focuss": lambda t: np.abs(t) ** (2 - p) + tau}[method]
  omega = {k: np.ones_like(v) for k, v in theta.items()}
  velocity = {k: np.zeros_like(v) for k, v in theta.items()}  # of q
  for n, g in enumerate(grads):
    if n % period == 0 and n < (iterations or 99) * period:  # θ = q ⊙ ω, q kept: θ moves
      refreshed = ["a", "b"][(n // period) % 2:][:1] if leafwise else ["a", "b"]
      for k in refreshed:
        new = f(theta[k])
        theta[k] = theta[k] / omega[k] * new
        omega[k] = new
    else:
      for k in names:
        velocity[k] = mu * velocity[k] + g[k] * omega[k]
        theta[k] = theta[k] - lr * omega[k] * velocity[k]
    for k in names:
      np.testing.assert_allclose(out[n][k], theta[k], rtol=2e-5, atol=1e-6, err_msg=f"{n} {k}")
  assert not np.allclose(omega["a"], 1) and not np.allclose(omega["b"], 1)


def test_lobster_matches_transcription():
  lam, lr = 0.1, 0.2
  rng = np.random.default_rng(2)
  theta = rng.normal(size=(3, 4))
  grads = [rng.normal(scale=1.0, size=(3, 4)) for _ in range(6)]
  out, _ = _steps(so.lobster(optax.sgd(lr), lam), jnp.float32(theta),
                  [jnp.float32(g) for g in grads])
  for n, g in enumerate(grads):
    stepped = theta - lr * g
    theta = stepped - lam * stepped * np.maximum(0, 1 - np.abs(g))
    np.testing.assert_allclose(out[n], theta, rtol=1e-5, atol=1e-6)
  assert any(np.abs(g).max() > 1 for g in grads)  # both branches exercised


def test_bad_input():
  with pytest.raises(ValueError, match="scope must be one of"):
    so.prune_by_magnitude(0.5, scope="model")
  with pytest.raises(ValueError, match=r"sparsity must lie in \[0, 1\]"):
    so.prune_by_magnitude(1.5)
  with pytest.raises(ValueError, match="method must be one of"):
    so.scale_by_affine_scaling("l0")
  with pytest.raises(ValueError, match="tau must be positive"):
    so.scale_by_affine_scaling("l1", tau=0.0)
  with pytest.raises(ValueError, match="strength must be non-negative"):
    so.lobster(optax.sgd(0.1), -1.0)
  with pytest.raises(ValueError, match="begin_step < end_step"):
    so.polynomial_sparsity(0.9, 10, 5)
