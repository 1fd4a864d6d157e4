"""The named optimizers against the NumPy transcription of the xRDA and RDA update rules, and its special cases."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import sparse_optax as so
from tests import numpy_reference as ref

N_STEPS = 60
HP = dict(s0=0.5, lam=2e-3, wd=5e-4, T=3.0, Tb=2.0, F=50.0)


def _tree(seed=0):
  rng = np.random.default_rng(seed)
  return {
      "conv": {"kernel": rng.normal(0, 0.5, (3, 3, 4, 6)), "bias": np.zeros(6)},
      "dense": {"kernel": rng.normal(0, 0.5, (12, 5)), "bias": rng.normal(0, 0.1, 5)},
      "bn": {"scale": np.ones(6)},
  }


def _grads(tree, n, seed=1):
  rng = np.random.default_rng(seed)
  return [jax.tree.map(lambda x: rng.normal(0, 0.3, x.shape), tree) for _ in range(n)]


def run_steps(tx, params, grads, state=None):
  """Jitted steps from ``state`` (default: ``tx.init``); the params after each step, and the
  last state."""
  state = tx.init(params) if state is None else state

  @jax.jit
  def step(p, s, g):
    u, s = tx.update(g, s, p)
    return optax.apply_updates(p, u), s

  out = []
  for g in grads:
    params, state = step(params, state, jax.tree.map(jnp.float32, g))
    out.append(params)
  return out, state


def _run(tx, params, grads):
  """Jitted steps; returns the params after each step."""
  return run_steps(tx, params, grads)[0]


def _f32(tree):
  return jax.tree.map(jnp.float32, tree)


@pytest.mark.parametrize("structure", so.STRUCTURES)
def test_xrda_matches_numpy_transcription(structure):
  theta0 = _tree()
  grads = _grads(theta0, N_STEPS)
  tx = so.xrda(
      so.cosine_decay(HP["s0"], N_STEPS), so.cosine_averaging(N_STEPS), HP["lam"],
      momentum_timescale=HP["T"], magnitude_timescale=HP["Tb"],
      maximum_factor=HP["F"], weight_decay=HP["wd"], structure=structure)
  got = _run(tx, _f32(theta0), grads)

  leaves0, treedef = jax.tree.flatten(theta0)
  refs = [ref.XRDA(x, structure) for x in leaves0]
  theta = leaves0
  zeros_seen = 0
  for n in range(N_STEPS):
    hp = dict(s=ref.cosine_lr(HP["s0"], N_STEPS, n), alpha=ref.cosine_alpha(N_STEPS, n),
              lam=HP["lam"], wd=HP["wd"], T=HP["T"], Tb=HP["Tb"], F=HP["F"])
    theta = [r.step(t, g, **hp) for r, t, g in
             zip(refs, theta, jax.tree.leaves(grads[n]))]
    for a, b in zip(jax.tree.leaves(got[n]), theta):
      np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6)
      zeros_seen += int(np.sum(b == 0))
  assert zeros_seen > 0, "the test must exercise the threshold"
  final = jax.tree.leaves(got[-1])
  assert sum(int(np.sum(np.asarray(x) == 0)) for x in final) > 0


def test_kernel_mode_zeroes_whole_kernels_and_channel_mode_whole_filters():
  theta0 = {"k": np.random.default_rng(0).normal(0, 0.5, (3, 3, 8, 8))}
  grads = _grads(theta0, 80, seed=3)
  for structure, axes in (("kernel", (0, 1)), ("channel", (0, 1, 2))):
    tx = so.xrda(so.cosine_decay(0.5, 80), so.cosine_averaging(80), 2e-2,
                 momentum_timescale=3.0, maximum_factor=50.0, structure=structure)
    k = np.asarray(_run(tx, _f32(theta0), grads)[-1]["k"])
    group_zero = np.all(k == 0, axis=axes)
    some_zero = np.any(k == 0, axis=axes)
    assert group_zero.any(), structure
    # the prox is element-wise, but the shared weight makes groups die together
    assert group_zero.sum() >= 0.8 * some_zero.sum(), structure


def test_alpha_zero_is_proximal_sgd_with_momentum():
  theta0 = _tree(2)
  grads = _grads(theta0, 20, seed=5)
  kw = dict(momentum_timescale=2.0, maximum_factor=20.0, weight_decay=1e-3)
  got = _run(so.xrda(0.3, 0.0, 1e-2, **kw), _f32(theta0), grads)
  weights = so.log_l1_weights(0.3, 2.0, maximum_factor=20.0)
  prox_sgd_momentum = optax.chain(
      optax.add_decayed_weights(1e-3),
      so.scale_by_timescale_momentum(0.3, 2.0),
      optax.scale_by_learning_rate(0.3),
      so.soft_threshold(so.accumulated_threshold(1e-2, 0.3, 0.0, weights)),
  )
  want = _run(prox_sgd_momentum, _f32(theta0), grads)
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_alpha_one_is_rda_running_dual_average():
  """α ≡ 1: z = θ_0 − Σ s v (running dual average), B = Σ s w (accumulated step)."""
  theta0 = {"w": np.random.default_rng(4).normal(0, 1.0, (6, 7))}
  grads = _grads(theta0, 15, seed=6)
  s, lam, T = 0.2, 5e-2, 1.5
  got = _run(so.xrda(s, 1.0, lam, momentum_timescale=T, beta=0.5), _f32(theta0), grads)
  mu = np.exp(-s / T)
  v = np.zeros((6, 7))
  sum_sv = np.zeros((6, 7))
  r = np.zeros((6, 7))
  B = np.zeros((6, 7))
  F = 1.5 / 0.5
  w0 = theta0["w"]
  theta = w0
  for n, g in enumerate(grads):
    r = mu * r + (1 - mu) * np.abs(theta)
    B = B + s * F / (1 + (F - 1) * r / r.max())
    v = mu * v + (1 - mu) * g["w"]
    sum_sv = sum_sv + s * v
    z = w0 - sum_sv
    theta = np.sign(z) * np.maximum(np.abs(z) - lam * B, 0)
    np.testing.assert_allclose(got[n]["w"], theta, rtol=2e-5, atol=2e-6)


def test_no_l1_and_alpha_zero_is_sgd_with_ema_momentum():
  theta0 = _tree(3)
  grads = _grads(theta0, 25, seed=7)
  s, T, wd = 0.1, 0.8, 1e-2
  got = _run(so.xrda(s, 0.0, 0.0, momentum_timescale=T, weight_decay=wd),
             _f32(theta0), grads)
  mu = float(np.exp(-s / T))
  want = _run(optax.chain(optax.add_decayed_weights(wd), optax.ema(mu, debias=False),
                          optax.scale(-s)), _f32(theta0), grads)
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_rda_matches_xiao_closed_form():
  theta0 = {"w": np.random.default_rng(8).uniform(-1, 1, (5, 8))}
  grads = _grads(theta0, 40, seed=9)
  gamma, lam = 4.0, 0.05
  got = _run(so.rda(gamma, lam), _f32(theta0), grads)
  want = ref.rda_closed_form(theta0["w"], [g["w"] for g in grads], gamma, lam)
  for a, b in zip(got, want):
    np.testing.assert_allclose(a["w"], b, rtol=2e-5, atol=2e-6)
  assert np.sum(np.asarray(got[-1]["w"]) == 0) > 0


def test_prox_sgd_matches_transcription():
  theta0 = {"w": np.random.default_rng(10).normal(0, 1, (4, 4)), "b": np.ones(4)}
  grads = _grads(theta0, 10, seed=11)
  s, lam, m = 0.1, 0.3, 0.9
  got = _run(so.prox_sgd(s, lam, momentum=m), _f32(theta0), grads)
  w, b = theta0["w"], theta0["b"]
  tw, tb = np.zeros_like(w), np.zeros_like(b)
  for n, g in enumerate(grads):
    tw, tb = m * tw + g["w"], m * tb + g["b"]
    zw = w - s * tw
    w = np.sign(zw) * np.maximum(np.abs(zw) - lam * s, 0)
    b = b - s * tb  # biases carry no l1
    np.testing.assert_allclose(got[n]["w"], w, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got[n]["b"], b, rtol=1e-5, atol=1e-6)


def test_alias_equals_hand_assembled_chain():
  theta0 = _tree(12)
  grads = _grads(theta0, 12, seed=13)
  n = 12
  lr, alpha = so.cosine_decay(0.4, n), so.cosine_averaging(n)
  got = _run(so.xrda(lr, alpha, 1e-3, momentum_timescale=2.0, magnitude_timescale=3.0,
                     beta=0.01, weight_decay=5e-4, structure="kernel"),
             _f32(theta0), grads)
  by_hand = optax.chain(
      optax.add_decayed_weights(5e-4),
      so.scale_by_timescale_momentum(lr, 2.0),
      optax.scale_by_learning_rate(lr),
      so.dual_averaging(alpha),
      so.soft_threshold(so.accumulated_threshold(
          1e-3, lr, alpha, so.log_l1_weights(lr, 3.0, beta=0.01, structure="kernel"))),
  )
  want = _run(by_hand, _f32(theta0), grads)
  # The alias hands the dual average z itself to the prox, the chain θ + (z − θ): equal up to
  # that rounding, with the same zeros.
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    np.testing.assert_array_equal(np.asarray(a) == 0, np.asarray(b) == 0)
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_schedules_match_published_formulas():
  n = 37
  lr, alpha = so.cosine_decay(0.25, n), so.cosine_averaging(n)
  for c in range(n + 3):
    assert float(lr(c)) == pytest.approx(ref.cosine_lr(0.25, n, c), abs=1e-7)
    assert float(alpha(c)) == pytest.approx(ref.cosine_alpha(n, c), abs=1e-7)
  assert float(lr(n - 1)) == 0.0 and float(alpha(n - 1)) == 1.0


def test_state_has_at_most_four_parameter_sized_buffers():
  params = _f32(_tree())
  size = sum(x.size for x in jax.tree.leaves(params))
  for structure in so.STRUCTURES:
    state = so.xrda(0.1, 0.5, 1e-3, momentum_timescale=1.0, structure=structure).init(params)
    state_size = sum(x.size for x in jax.tree.leaves(state))
    assert state_size <= 4 * size + 64, structure
  kernel_state = so.xrda(0.1, 0.5, 1e-3, momentum_timescale=1.0, structure="kernel").init(
      {"k": jnp.ones((3, 3, 16, 16))})
  # v and z full-size, r and B per kernel
  assert sum(x.size for x in jax.tree.leaves(kernel_state)) < 2.5 * 3 * 3 * 16 * 16
