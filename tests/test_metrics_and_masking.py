"""Sparsity metrics against counts by hand; freeze_zeros pins zeros and only grows."""

import jax
import jax.numpy as jnp
import numpy as np
import optax

import sparse_optax as so


def _params():
  k = np.zeros((3, 3, 4, 5), np.float32)
  k[0, 0, 0, 0] = 1.0  # kernel (0, 0) alive
  k[:, :, 2, 0] = 2.0  # kernel (2, 0) alive
  k[1, 2, 3, 4] = -1.0  # kernel (3, 4) alive; output channels 0 and 4 alive
  d = np.zeros((6, 2), np.float32)
  d[0, 1] = 3.0
  return {"conv": {"kernel": jnp.asarray(k), "bias": jnp.ones(5)},
          "dense": {"kernel": jnp.asarray(d), "bias": jnp.zeros(2)}}


def test_summary_counts_by_hand():
  p = _params()
  s = jax.jit(so.sparsity_summary)(p)
  total = 3 * 3 * 4 * 5 + 5 + 6 * 2 + 2
  nonzeros = (1 + 9 + 1) + 5 + 1
  assert s["total"] == total and int(s["nonzeros"]) == nonzeros
  np.testing.assert_allclose(s["density"], nonzeros / total, rtol=1e-6)
  np.testing.assert_allclose(s["compression"], total / nonzeros, rtol=1e-6)
  assert s["kernels"] == 20 and int(s["zero_kernels"]) == 17
  assert s["channels"] == 5 and int(s["zero_channels"]) == 3
  assert int(s["layers"]["conv/kernel"]["nonzeros"]) == 11
  np.testing.assert_allclose(s["layers"]["dense/kernel"]["density"], 1 / 12)
  assert set(s["layers"]) == {"conv/kernel", "conv/bias", "dense/kernel", "dense/bias"}
  assert int(so.count_nonzeros(p)) == nonzeros
  assert float(so.density(p)) == np.float32(nonzeros / total)


def test_compression_of_all_zero_tree_is_infinite():
  assert np.isinf(float(so.compression_ratio({"a": jnp.zeros(3)})))


def test_freeze_zeros_pins_and_only_grows():
  tx = optax.chain(optax.sgd(1.0), so.freeze_zeros(start_step=1))
  p = {"w": jnp.array([[0.0, 1.0, 2.0]]), "b": jnp.array([0.0])}
  state = tx.init(p)
  step = jax.jit(tx.update)
  g = {"w": jnp.array([[-1.0, 1.0, 0.0]]), "b": jnp.array([-1.0])}
  # step 0: before start_step nothing is pinned
  u, state = step(g, state, p)
  p = optax.apply_updates(p, u)
  np.testing.assert_array_equal(p["w"], [[1.0, 0.0, 2.0]])
  # from step 1: w[1] is zero and stays zero; w[2] reaches zero at step 2 and is pinned
  # from then on (the mask grows); w[0] moves; biases are never pinned
  for _ in range(3):
    u, state = step({"w": jnp.array([[-1.0, -5.0, 1.0]]), "b": jnp.array([-1.0])}, state, p)
    p = optax.apply_updates(p, u)
  np.testing.assert_array_equal(p["w"], [[4.0, 0.0, 0.0]])
  assert float(p["b"][0]) == 4.0
  np.testing.assert_array_equal(state[1].mask["w"], [[False, True, True]])
