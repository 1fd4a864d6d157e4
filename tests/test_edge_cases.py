"""Boundaries, defaults and guards that mutation testing (``make mutate``) showed untested.

Each test pins one documented behaviour that a one-line change could break silently;
``mutation/SURVIVORS.md`` lists which mutant each one kills.
"""

import jax.numpy as jnp
import numpy as np
import optax
import pytest

import sparse_optax as so


def _step(tx, params, grads):
  updates, state = tx.update(grads, tx.init(params), params)
  return optax.apply_updates(params, updates), state


def test_affine_scaling_default_tau_is_1e_3():
  params = jnp.array([[0.0, 2.0]])
  tx = so.scale_by_affine_scaling("l1")
  updates, _ = tx.update(jnp.ones((1, 2)), tx.init(params), params)  # ω² = (|θ| + τ)²
  np.testing.assert_allclose(updates, np.float32([[1e-3, 2.001]]) ** 2, rtol=1e-6)


@pytest.mark.parametrize("p,ok", [(0.0, True), (2.0, True), (2.01, False), (-0.01, False)])
def test_focuss_exponent_range_is_closed(p, ok):
  if ok:
    so.scale_by_affine_scaling("focuss", p=p)
  else:
    with pytest.raises(ValueError, match=r"p must lie in \[0, 2\]|p must be non-negative"):
      so.scale_by_affine_scaling("focuss", p=p)


@pytest.mark.parametrize("bad", [{"a": 1.0}, object(), None])
def test_non_numeric_hyperparameters_name_the_argument(bad):
  with pytest.raises(TypeError, match="l1 must be a number"):
    so.accumulated_threshold(bad, 0.1)


def test_python_number_params_are_refused_naming_the_leaf():
  with pytest.raises(TypeError, match=r"params leaf \['w'\] has type float, not an array"):
    so.prox_sgd(0.1, 0.0).init({"w": 1.0, "b": jnp.zeros(2)})


def test_dual_averaging_checks_its_own_averaging():
  with pytest.raises(ValueError, match=r"averaging must lie in \[0, 1\]"):
    so.dual_averaging(1.5)


def test_polynomial_sparsity_needs_a_ramp():
  with pytest.raises(ValueError, match="need 0 <= begin_step < end_step"):
    so.polynomial_sparsity(0.9, 5, 5)  # would divide by zero


def test_zero_sparsity_keeps_zero_weights_free():
  # Pruning nothing must not pin weights that happen to be exactly zero.
  params = {"w": jnp.array([[0.0, 1.0]])}
  tx = optax.chain(optax.sgd(1.0), so.prune_by_magnitude(0.0))
  new, state = _step(tx, params, {"w": jnp.array([[-1.0, -1.0]])})
  np.testing.assert_array_equal(new["w"], np.float32([[1.0, 2.0]]))
  assert bool(np.all(state[1].keep["w"]))


def test_log_l1_weight_of_an_all_zero_leaf_is_zero():
  # Documented: a leaf whose running magnitude is all zero gets no l1 (it can regrow).
  w = so.log_l1_weights(1.0, 1.0, maximum_factor=10.0)
  params = {"dead": jnp.zeros((2, 3)), "live": jnp.array([[0.0, 1.0]])}
  weights, _ = w.update(w.init(params), params)
  np.testing.assert_array_equal(weights["dead"], np.zeros((2, 3), np.float32))
  np.testing.assert_allclose(weights["live"], [[10.0, 1.0]])


def test_accumulated_threshold_default_is_the_proximal_threshold():
  # averaging defaults to 0: the threshold is λ s w of the current step only.
  thr = so.accumulated_threshold(0.5, 0.2)
  params = jnp.ones((2, 2))
  state = thr.init(params)
  for _ in range(3):
    t, state = thr.update(state, params)
  assert float(t) == pytest.approx(0.5 * 0.2)


def test_polynomial_sparsity_with_a_late_begin_and_bad_arguments():
  s = so.polynomial_sparsity(0.8, 10, 30, initial_sparsity=0.2, power=2.0)
  for t in (0, 10, 15, 30, 40):
    frac = min(max((t - 10) / 20, 0.0), 1.0)
    assert float(s(t)) == pytest.approx(0.8 + (0.2 - 0.8) * (1 - frac) ** 2, rel=1e-6), t
  with pytest.raises(ValueError, match=r"initial_sparsity must lie in \[0, 1\]"):
    so.polynomial_sparsity(0.8, 0, 5, initial_sparsity=1.5)
  with pytest.raises(TypeError, match="final_sparsity must be a number, not a schedule"):
    so.polynomial_sparsity(lambda n: 0.5, 0, 5)


def test_full_sparsity_prunes_every_weight():
  params = {"w": jnp.array([[0.3, -0.1, 2.0, -4.0]])}
  tx = optax.chain(optax.sgd(0.0), so.prune_by_magnitude(1.0))
  new, _ = _step(tx, params, {"w": jnp.zeros((1, 4))})
  np.testing.assert_array_equal(new["w"], np.zeros((1, 4), np.float32))


@pytest.mark.parametrize("factory,kwargs,match", [
    (so.prune_by_magnitude, dict(sparsity=0.5, frequency=0), "frequency must be an int >= 1"),
    (so.prune_by_magnitude, dict(sparsity=0.5, begin_step=-1), "begin_step must be an int >= 0"),
    (so.prune_by_magnitude, dict(sparsity=0.5, frequency=2.5), "frequency must be an int"),
    (so.freeze_zeros, dict(start_step=-1), "start_step must be an int >= 0"),
    (so.freeze_zeros, dict(start_step=True), "start_step must be an int"),
    (so.scale_by_affine_scaling, dict(method="focuss", p=lambda n: 0.5),
     "p must be a number, not a schedule"),
])
def test_bad_step_counts_and_exponents(factory, kwargs, match):
  with pytest.raises((ValueError, TypeError), match=match):
    factory(**kwargs)


def test_ragged_hyperparameter_is_a_type_error():
  with pytest.raises(TypeError, match="l1 must be a number"):
    so.accumulated_threshold([1.0, [2.0]], 0.1)


def test_defaults_documented_in_the_readme():
  params = jnp.array([[0.0, 1.0]])
  # freeze_zeros pins from step 0.
  tx = optax.chain(optax.sgd(1.0), so.freeze_zeros())
  new, _ = _step(tx, params, -jnp.ones((1, 2)))
  assert float(new[0, 0]) == 0.0
  # affine scaling refreshes ω every 1000 steps, starting at step 0.
  tx = so.scale_by_affine_scaling("l1", tau=1.0)
  state = tx.init(params)
  for n in range(1001):
    updates, state = tx.update(jnp.ones((1, 2)), state, params * (n + 1))
    if n in (0, 999):
      np.testing.assert_allclose(updates, [[1.0, 4.0]])  # ω from step 0's params
  np.testing.assert_allclose(updates, [[1.0, (1001 + 1.0) ** 2]])  # refreshed at 1000
  # log-l1's maximum factor is 500, and its arguments can be named.
  w = so.log_l1_weights(learning_rate=1.0, timescale=1.0)
  weights, _ = w.update(w.init(params), params)
  np.testing.assert_allclose(weights, [[500.0, 1.0]])
  # a period of one step is allowed.
  so.scale_by_affine_scaling("l1", period=1)


def test_compression_and_density_at_the_smallest_counts():
  one = {"w": jnp.array([[0.0, 0.0, 3.0, 0.0]])}
  assert float(so.compression_ratio(one)) == 4.0  # one non-zero
  summary = so.sparsity_summary({"s": jnp.array([2.0]), "e": jnp.zeros((0, 3))})
  assert summary["layers"]["s"]["density"] == 1.0
  assert summary["layers"]["e"]["density"] == 0.0  # an empty leaf is not NaN


@pytest.mark.parametrize("factory,kwargs,match", [
    (so.scale_by_timescale_momentum, dict(learning_rate=0.1, timescale=0.0),
     "timescale must be positive"),
    (so.accumulated_threshold, dict(l1=0.1, learning_rate=0.1, averaging=1.5),
     r"averaging must lie in \[0, 1\]"),
    (so.cosine_decay, dict(init_value=lambda n: 1.0, total_steps=10),
     "init_value must be a number, not a schedule"),
    (so.log_l1_weights, dict(learning_rate=0.1, timescale=1.0, maximum_factor=0.0),
     "maximum_factor must be >= 1"),
])
def test_each_primitive_checks_its_own_arguments(factory, kwargs, match):
  with pytest.raises((ValueError, TypeError), match=match):
    factory(**kwargs)


def test_a_single_step_schedule_and_a_maximum_factor_of_one():
  assert float(so.cosine_decay(1.0, 1)(0)) == pytest.approx(0.0, abs=1e-7)  # N = 1 is valid
  # F = 1 is plain l1 (times the structure's c): every weight 1, whatever the magnitudes.
  w = so.log_l1_weights(1.0, 1.0, maximum_factor=1.0)
  params = {"w": jnp.array([[0.0, 1.0, 5.0]])}
  weights, _ = w.update(w.init(params), params)
  np.testing.assert_array_equal(weights["w"], np.ones((1, 3), np.float32))


def test_pruning_steps_count_from_begin_step():
  # Every step by default; with begin_step 1 and frequency 3: steps 1, 4, 7.
  params = {"w": jnp.asarray(np.arange(1.0, 101.0).reshape(1, 100), jnp.float32)}
  zero = {"w": jnp.zeros((1, 100))}

  def pruned_after_each_step(tx):
    state, out = tx.init(params), []
    p = params
    for _ in range(8):
      u, state = tx.update(zero, state, p)
      p = optax.apply_updates(p, u)
      out.append(100 - int(np.count_nonzero(p["w"])))
    return out

  ramp = lambda n: 0.1 * n  # noqa: E731
  every = pruned_after_each_step(optax.chain(optax.sgd(0.0), so.prune_by_magnitude(ramp)))
  assert every == [0, 10, 20, 30, 40, 50, 60, 70]
  sparse = pruned_after_each_step(optax.chain(
      optax.sgd(0.0), so.prune_by_magnitude(ramp, begin_step=1, frequency=3)))
  assert sparse == [0, 10, 10, 10, 40, 40, 40, 70]


def test_focuss_default_exponent_is_one_half():
  params = jnp.array([[4.0]])
  tx = so.scale_by_affine_scaling("focuss", tau=1e-9)
  updates, _ = tx.update(jnp.ones((1, 1)), tx.init(params), params)
  np.testing.assert_allclose(updates, [[(4.0 ** 1.5) ** 2]], rtol=1e-6)  # ω = |θ|^(2 − p)


def test_initial_sparsity_is_a_number():
  with pytest.raises(TypeError, match="initial_sparsity must be a number, not a schedule"):
    so.polynomial_sparsity(0.9, 0, 5, initial_sparsity=lambda n: 0.1)
