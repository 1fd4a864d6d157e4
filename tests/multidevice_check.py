"""Run as a script with 8 fake CPU devices: every optimizer of the table gives the same params
on one device, under jax.jit over a data mesh (params replicated, batch sharded), under
jax.pmap, and with params and state sharded FSDP-style over a 2-D (data, model) mesh (kernels
split along an axis, state given the params' shardings by optax.tree.map_params). Exits
non-zero on the first mismatch; prints one line per optimizer."""

import functools
import os
import sys

from tests import xla_flags

os.environ["XLA_FLAGS"] = xla_flags.flags(8)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from jax.sharding import NamedSharding, PartitionSpec as P  # noqa: E402

from tests.optimizer_table import OPTIMIZERS  # noqa: E402

STEPS, BATCH = 4, 32
TARGET = {"w": jnp.linspace(-1, 1, 12).reshape(3, 4), "k": jnp.ones((3, 3, 2, 4)) * 0.1,
          "b": jnp.array([0.5, -0.5])}


def loss(p, x):
  # x: [B, 12]; a least-squares fit whose gradient needs a mean over the whole batch
  pred = x @ p["w"].reshape(-1) + jnp.sum(p["k"]) + jnp.sum(p["b"])
  target = x @ TARGET["w"].reshape(-1) + jnp.sum(TARGET["k"]) + jnp.sum(TARGET["b"])
  return jnp.mean((pred - target) ** 2)


def init():
  keys = jax.random.split(jax.random.key(0), 3)
  return {k: 0.3 * jax.random.normal(key, v.shape) for key, (k, v) in zip(keys, TARGET.items())}


def batches():
  rng = np.random.default_rng(0)
  return [jnp.asarray(rng.normal(size=(BATCH, 12)), jnp.float32) for _ in range(STEPS)]


def run_single(tx):
  p, s = init(), None
  s = tx.init(p)

  @jax.jit
  def step(p, s, x):
    u, s = tx.update(jax.grad(loss)(p, x), s, p)
    return optax.apply_updates(p, u), s

  for x in batches():
    p, s = jax.block_until_ready(step(p, s, x))
  return p


def run_mesh(tx):
  mesh = jax.make_mesh((8,), ("data",))
  repl, data = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))
  p = jax.device_put(init(), repl)
  s = jax.device_put(tx.init(p), repl)

  @jax.jit
  def step(p, s, x):
    u, s = tx.update(jax.grad(loss)(p, x), s, p)
    p = optax.apply_updates(p, u)
    return jax.lax.with_sharding_constraint((p, s), repl)

  for x in batches():
    p, s = jax.block_until_ready(step(p, s, jax.device_put(x, data)))
  assert all(leaf.sharding.is_fully_replicated for leaf in jax.tree.leaves(p))
  return p


def run_fsdp(tx):
  mesh = jax.make_mesh((4, 2), ("data", "model"), axis_types=(jax.sharding.AxisType.Auto,) * 2)
  specs = {"w": P(None, "model"), "k": P(None, None, None, "data"), "b": P("model")}
  shardings = {k: NamedSharding(mesh, spec) for k, spec in specs.items()}
  p = jax.device_put(init(), shardings)
  state = tx.init(p)
  state_shardings = optax.tree.map_params(
      tx, lambda _, sharding: sharding, state, shardings,
      transform_non_params=lambda _: NamedSharding(mesh, P()))
  s = jax.device_put(state, state_shardings)

  @functools.partial(jax.jit, out_shardings=(shardings, state_shardings))
  def step(p, s, x):
    u, s = tx.update(jax.grad(loss)(p, x), s, p)
    return optax.apply_updates(p, u), s

  for x in batches():
    p, s = jax.block_until_ready(step(p, s, jax.device_put(x, NamedSharding(mesh, P("data")))))
  assert not any(leaf.sharding.is_fully_replicated for leaf in jax.tree.leaves(p))
  return p


def run_pmap(tx):
  n = jax.local_device_count()
  p = init()
  s = tx.init(p)
  replicate = lambda t: jax.tree.map(lambda x: jnp.broadcast_to(x, (n, *x.shape)), t)
  p, s = replicate(p), replicate(s)

  def step(p, s, x):
    g = jax.lax.pmean(jax.grad(loss)(p, x), "i")
    u, s = tx.update(g, s, p)
    return optax.apply_updates(p, u), s

  pstep = jax.pmap(step, axis_name="i")
  for x in batches():
    p, s = jax.block_until_ready(pstep(p, s, x.reshape(n, BATCH // n, 12)))
  for leaf in jax.tree.leaves(p):  # replicas agree
    np.testing.assert_allclose(leaf, jnp.broadcast_to(leaf[0], leaf.shape), rtol=0, atol=0)
  return jax.tree.map(lambda x: x[0], p)


def main():
  assert jax.device_count() == 8, jax.devices()
  for name, factory, kwargs in OPTIMIZERS:
    tx = factory(**kwargs)
    single = run_single(tx)
    for how, got in (("mesh", run_mesh(tx)), ("pmap", run_pmap(tx)), ("fsdp", run_fsdp(tx))):
      for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(single)):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6, err_msg=f"{name} {how}")
    nz = sum(int(jnp.count_nonzero(x)) for x in jax.tree.leaves(single))
    print(f"{name}: single == mesh == pmap == fsdp (non-zeros {nz})", flush=True)
  return 0


if __name__ == "__main__":
  sys.exit(main())
