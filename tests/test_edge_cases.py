"""Boundaries, defaults and guards that mutation testing (``make mutate``) showed untested.

Each test pins one documented behaviour that a one-line change could break silently;
``mutation/SURVIVORS.md`` lists which mutant each one kills.
"""

import math

import jax
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
