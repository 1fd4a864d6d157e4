"""Kernel layouts (HWIO, OIHW), per-leaf structures (1-D, 2-D, 3-D convs), and end to end
with an Equinox model (OIHW, None leaves) and a Flax Linen model (HWIO)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import sparse_optax as so

KW = dict(learning_rate=0.2, averaging=0.5, l1=5e-2, momentum_timescale=1.0)


def _run(tx, params, grad_fn, steps=20):
  state = tx.init(params)
  update = jax.jit(tx.update)
  for _ in range(steps):
    updates, state = update(grad_fn(params), state, params)
    params = optax.apply_updates(params, updates)
  return params


def _grads(params):
  return jax.tree.map(lambda x: 0.05 * jnp.sin(7.0 * x + 1.0), params)


E2E_L1 = 1e-2
RNG = np.random.default_rng(0)
HWIO = {"conv": jnp.asarray(RNG.normal(size=(3, 3, 4, 6)), jnp.float32),
        "dense": jnp.asarray(RNG.normal(size=(6, 5)), jnp.float32)}
OIHW = {"conv": jnp.transpose(HWIO["conv"], (3, 2, 0, 1)), "dense": HWIO["dense"]}


@pytest.mark.parametrize("structure", ["kernel", "channel"])
def test_oihw_is_hwio_transposed(structure):
  hwio = _run(so.xrda(**KW, structure=structure), HWIO, _grads)
  oihw = _run(so.xrda(**KW, structure=structure, kernel_layout="OIHW"), OIHW, _grads)
  np.testing.assert_allclose(oihw["conv"], np.transpose(hwio["conv"], (3, 2, 0, 1)),
                             rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(oihw["dense"], hwio["dense"], rtol=1e-5, atol=1e-6)
  zero = np.all(np.asarray(hwio["conv"]) == 0, axis=(0, 1) if structure == "kernel"
                else (0, 1, 2))
  assert zero.any() and not zero.all()  # the test sees structured zeros
  for layout, tree in (("HWIO", HWIO), ("OIHW", OIHW)):
    s = so.sparsity_summary(hwio if layout == "HWIO" else oihw, kernel_layout=layout)
    assert int(s["zero_kernels" if structure == "kernel" else "zero_channels"]) == zero.sum()
    del tree


def test_layouts_read_wrongly_give_other_groups():
  # Reading an OIHW kernel as HWIO groups other weights: the results differ.
  right = _run(so.xrda(**KW, structure="channel", kernel_layout="OIHW"), OIHW, _grads)
  wrong = _run(so.xrda(**KW, structure="channel"), OIHW, _grads)
  assert not np.allclose(right["conv"], wrong["conv"])


@pytest.mark.parametrize("structure", ["kernel", "channel"])
def test_1d_and_3d_convolutions_take_a_per_leaf_structure(structure):
  # A 1-D conv (W, I, O) is a 2-D conv (1, W, I, O) with H = 1, and a 3-D one (1, 1, H, W, I, O).
  conv2d = HWIO["conv"]
  trees = {
      "1d": ({"conv": conv2d[0]}, lambda x: x[None]),
      "3d": ({"conv": conv2d[None]}, lambda x: x[0]),
  }
  reference = _run(so.xrda(**KW, structure=structure), {"conv": conv2d}, _grads)["conv"]
  for name, (params, to_2d) in trees.items():
    if name == "1d":
      reference_1d = _run(so.xrda(**KW, structure=structure), {"conv": conv2d[:1]},
                          _grads)["conv"]
      expected = reference_1d
    else:
      expected = reference
    out = _run(so.xrda(**KW, structure={"conv": structure}), params, _grads)["conv"]
    np.testing.assert_allclose(to_2d(out), expected, rtol=1e-5, atol=1e-6, err_msg=name)


def test_a_string_structure_leaves_3d_attention_kernels_unstructured():
  params = {"attention": jnp.asarray(RNG.normal(size=(4, 8, 8)), jnp.float32)}
  kernel = _run(so.xrda(**KW, structure="kernel"), params, _grads)
  plain = _run(so.xrda(**KW), params, _grads)
  # Two programs computing the same thing: equal to float32 rounding, which differs between
  # them at XLA's -O0 under JAX 0.6 (3.5e-7); a kernel structure would zero other weights.
  np.testing.assert_array_equal(kernel["attention"] == 0, plain["attention"] == 0)
  np.testing.assert_allclose(kernel["attention"], plain["attention"], rtol=1e-6, atol=1e-6)


def test_structures_that_do_not_fit_the_leaf():
  with pytest.raises(ValueError, match=r"leaf dense has shape \(6, 5\), which is not a conv"):
    so.xrda(**KW, structure={"conv": "kernel", "dense": "channel"}).init(HWIO)
  with pytest.raises(ValueError, match="structure must be one of"):
    so.xrda(**KW, structure={"conv": "rows", "dense": "unstructured"}).init(HWIO)
  with pytest.raises(ValueError, match="structure tree does not match"):
    so.xrda(**KW, structure={"other": "kernel"}).init(HWIO)
  with pytest.raises(ValueError, match="kernel_layout must be one of"):
    so.xrda(**KW, kernel_layout="NCHW")
  with pytest.raises(ValueError, match="kernel_layout configure the log-l1 weighting"):
    so.xrda(**KW, kernel_layout="OIHW", weights=so.uniform_l1_weights())


def test_summary_counts_kernels_of_chosen_convs_in_either_layout():
  k = np.zeros((5, 2, 3), np.float32)  # a 1-D conv, HWIO: (W, I, O)
  k[:, 0, 1] = 1.0
  s = so.sparsity_summary({"c": jnp.asarray(k)}, convs={"c": True})
  assert (s["kernels"], int(s["zero_kernels"]), s["channels"], int(s["zero_channels"])) == (
      6, 5, 3, 2)
  s = so.sparsity_summary({"c": jnp.asarray(np.transpose(k, (2, 1, 0)))}, convs={"c": True},
                          kernel_layout="OIHW")
  assert (int(s["zero_kernels"]), int(s["zero_channels"])) == (5, 2)
  assert so.sparsity_summary({"c": jnp.asarray(k)})["kernels"] == 0  # 3-D: not a conv by default


def _dead_channels(kernel, out_axis):
  """Output channels whose every weight is zero; and the zeros outside them."""
  k = np.moveaxis(np.asarray(kernel), out_axis, 0).reshape(kernel.shape[out_axis], -1)
  dead = (k == 0).all(1)
  return int(dead.sum()), int((k[~dead] == 0).sum())


def _train_loss(apply, params, x, y):
  return jnp.mean((apply(params, x) - y) ** 2)


def test_equinox_model_end_to_end():
  eqx = pytest.importorskip("equinox")

  class Net(eqx.Module):
    conv: eqx.nn.Conv2d
    dense: eqx.nn.Linear
    act: callable = jax.nn.relu  # a non-array leaf: None after filtering

    def __call__(self, x):
      h = self.act(self.conv(x))
      return self.dense(jnp.mean(h, axis=(1, 2)))

  model = Net(eqx.nn.Conv2d(3, 16, 3, padding=1, key=jax.random.key(0)),
              eqx.nn.Linear(16, 2, key=jax.random.key(1)))
  params, static = eqx.partition(model, eqx.is_array)
  assert any(leaf is None for leaf in jax.tree.leaves(params, is_leaf=lambda v: v is None))
  x = jax.random.normal(jax.random.key(2), (8, 3, 8, 8))
  y = jax.random.normal(jax.random.key(3), (8, 2))
  apply = lambda p, x: jax.vmap(eqx.combine(p, static))(x)  # noqa: E731
  grad = jax.jit(jax.grad(lambda p: _train_loss(apply, p, x, y)))
  tx = so.xrda(learning_rate=0.1, averaging=0.5, l1=E2E_L1, momentum_timescale=1.0,
               structure="channel", kernel_layout="OIHW")
  trained = _run(tx, params, grad, steps=30)
  dead, _ = _dead_channels(trained.conv.weight, out_axis=0)
  assert 0 < dead < 16, dead
  assert int(so.sparsity_summary(trained, kernel_layout="OIHW")["zero_channels"]) == dead
  # Read as HWIO, the same weights group differently: whole filters are not what dies.
  misread = so.xrda(learning_rate=0.1, averaging=0.5, l1=E2E_L1, momentum_timescale=1.0,
                    structure="channel")
  wrong, _ = _dead_channels(_run(misread, params, grad, steps=30).conv.weight, out_axis=0)
  assert wrong != dead


def test_flax_linen_model_end_to_end():
  nn = pytest.importorskip("flax.linen")

  class Net(nn.Module):
    @nn.compact
    def __call__(self, x):
      h = nn.relu(nn.Conv(16, (3, 3))(x))
      return nn.Dense(2)(jnp.mean(h, axis=(1, 2)))

  x = jax.random.normal(jax.random.key(2), (8, 8, 8, 3))
  y = jax.random.normal(jax.random.key(3), (8, 2))
  net = Net()
  params = net.init(jax.random.key(0), x)
  grad = jax.jit(jax.grad(lambda p: _train_loss(net.apply, p, x, y)))
  tx = so.xrda(learning_rate=0.1, averaging=0.5, l1=E2E_L1, momentum_timescale=1.0,
               structure="channel")
  trained = _run(tx, params, grad, steps=30)
  dead, _ = _dead_channels(trained["params"]["Conv_0"]["kernel"], out_axis=3)
  assert 0 < dead < 16, dead
  assert int(so.sparsity_summary(trained)["zero_channels"]) == dead
