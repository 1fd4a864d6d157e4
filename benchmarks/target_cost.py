"""The cost of a sparsity target: xrda's update with ``sparsity=`` against plain xrda's, on the
ResNet-18-sized tree of ``benchmarks/optimizer_update.py`` (11.2M float32 params), and the
whole train step of the loop (forward, backward, update) on ResNet-20 and LeNet-5.

    python -m benchmarks.target_cost [--steps 200] [--repeats 3] [--width 1] [--models resnet20]

An exact solve of λ costs 31 passes of a count over the masked weights. It runs every
``solve_every`` steps, and with the default also wherever the target moves or the count strays
by the tolerance; the steps between pay one count (the feedback). Each row times ``--steps``
consecutive jitted updates from the initial state (params and state donated) and reports the
mean time per step; the column ``vs xrda`` divides it by plain xrda's (fixed λ) in the same
structure; ``solves`` counts the exact solves among the steps (``state.target.solves``),
replayed untimed. How often the default
solves depends on how fast the weights move, which random gradients do not tell: real runs log
their solves (``benchmarks/target_control.py``, solves per 1000 steps), and a run's mean update
costs about the feedback row plus that rate times the cost of a solve (the exact row's extra).
Each row is measured ``--repeats`` times: median and best. The train step rows time the loop's
jitted ``train_step`` (state donated) at batch 128 on random images, the same way.
"""

import argparse
import functools
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import sparse_optax as so
from benchmarks.common import machine
from benchmarks.optimizer_update import resnet18_shapes

SOLVE_EVERY = (1, 100, 1000, None)  # 1000: the default


def mean_step_time(tx, params, grads, steps: int, repeats: int, alternate: bool
                   ) -> tuple[list[float], int | None]:
  """Mean seconds per update over ``steps`` updates from the initial state, ``repeats``
  times; and how many exact solves of λ ran in them, replayed untimed (None without a
  target)."""
  def step(p, s, g, sign):
    u, s = tx.update(jax.tree.map(lambda x: sign * x, g), s, p)
    return optax.apply_updates(p, u), s

  fn = jax.jit(step, donate_argnums=(0, 1))

  def sign(i):  # alternating: noise without drift; else a constant pull (the most drift)
    return jnp.float32(-1.0 if alternate and i % 2 else 1.0)

  def fresh():  # each pass starts at step 0, so that a ramp is timed as a ramp
    return jax.tree.map(jnp.copy, params), tx.init(params)

  jax.block_until_ready(fn(*fresh(), grads, sign(0)))  # compile
  solves = None
  p, s = fresh()
  if so.target_state(s) is not None:
    for i in range(steps):
      p, s = fn(p, s, grads, sign(i))
    solves = int(so.target_state(s).solves)
  means = []
  for _ in range(repeats):
    p, s = jax.block_until_ready(fresh())
    t0 = time.perf_counter()
    for i in range(steps):
      p, s = fn(p, s, grads, sign(i))
    jax.block_until_ready((p, s))
    means.append((time.perf_counter() - t0) / steps)
  return means, solves


def train_step_times(model_name: str, solve_every, steps: int, repeats: int) -> list[float]:
  """Mean seconds per train step of the loop's xrda on ``model_name``, with a target solved
  every ``solve_every`` steps (None: feedback only; "plain": a fixed λ)."""
  from benchmarks import train_step as bench  # pylint: disable=g-import-not-at-top
  from train import train  # pylint: disable=g-import-not-at-top
  from train.configs import default  # pylint: disable=g-import-not-at-top
  dataset, shape, classes = bench.SETUPS[model_name]
  config = default.get_config()
  config.model, config.dataset, config.optimizer = model_name, dataset, "xrda"
  if solve_every != "plain":
    config.l1_sparsity, config.l1_solve_every = 0.9, solve_every or 0
  tx = train.create_optimizer(config, total_steps=10_000, steps_per_epoch=100)
  model, state = train.create_train_state(config, bench._Info(shape, classes), tx)  # pylint: disable=protected-access
  step = jax.jit(functools.partial(train.train_step, model, tx), donate_argnums=0)
  rng = np.random.default_rng(0)
  data = {"image": jnp.asarray(rng.normal(size=(128, *shape)), jnp.float32),
          "label": jnp.asarray(rng.integers(0, classes, 128), jnp.int32)}
  state, metrics = step(state, data)
  jax.block_until_ready(metrics)
  means = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    for _ in range(steps):
      state, metrics = step(state, data)
    jax.block_until_ready((state, metrics))
    means.append((time.perf_counter() - t0) / steps)
  return means


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--steps", type=int, default=200)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--width", type=int, default=1, help="channel multiplier of the tree")
  parser.add_argument("--models", default="resnet20,lenet5",
                      help="train steps to time (empty: none)")
  parser.add_argument("--alternate", action="store_true",
                      help="flip the gradient's sign every step (noise without drift) instead of "
                      "the same gradient every step")
  args = parser.parse_args()
  if args.steps % 100:
    parser.error("--steps must be a multiple of 100 (the solve_every=100 row's period in a whole "
                 "number)")

  keys = jax.random.split(jax.random.key(0), 64)
  params = {f"p{i:02d}": 0.05 * jax.random.normal(keys[i], s)
            for i, s in enumerate(resnet18_shapes(width=args.width))}
  grads = jax.tree.map(lambda x: 0.01 * jax.random.normal(keys[-1], x.shape), params)
  n = sum(x.size for x in jax.tree.leaves(params))
  print(f"machine: {machine()}")
  print(f"tree: ResNet-18 x{args.width} CIFAR shapes, {n:,} float32 params; mean of "
        f"{args.steps} consecutive updates, {args.repeats} repeats; gradient "
        f"{'alternating in sign' if args.alternate else 'the same'} every step")
  print("solves: exact solves of λ among those updates (state.target.solves)\n")
  print(f"{'update':52s} {'median ms':>10s} {'best ms':>8s} {'vs xrda':>8s} {'solves':>8s}")
  total = 1000
  lr, alpha = so.cosine_decay(1.0, total), so.cosine_averaging(total)
  for structure in ("unstructured", "kernel"):
    base = None
    rows = [("xrda, l1=1e-6", dict(l1=1e-6))] + [
        (f"xrda, sparsity=0.9, solve_every={k}", dict(sparsity=0.9, solve_every=k))
        for k in SOLVE_EVERY]
    for name, kwargs in rows:
      tx = so.xrda(lr, alpha, momentum_timescale=9.5, weight_decay=5e-4, structure=structure,
                   **kwargs)
      means, solves = mean_step_time(tx, params, grads, args.steps, args.repeats,
                                      args.alternate)
      med = statistics.median(means)
      base = base or med
      print(f"{structure + ' ' + name:52s} {med * 1e3:10.2f} {min(means) * 1e3:8.2f} "
            f"{med / base:8.2f} {'' if solves is None else solves:>8}", flush=True)

  for model_name in filter(None, args.models.split(",")):
    print(f"\n{'train step, batch 128':44s} {'median ms':>10s} {'best ms':>8s} {'vs xrda':>8s}")
    rows = [("xrda, l1=1e-6", "plain")] + [
        (f"xrda, sparsity=0.9, solve_every={k}", k) for k in SOLVE_EVERY]
    base = None
    for name, solve_every in rows:
      means = train_step_times(model_name, solve_every, args.steps, args.repeats)
      med = statistics.median(means)
      base = base or med
      print(f"{model_name + ' ' + name:44s} {med * 1e3:10.2f} {min(means) * 1e3:8.2f} "
            f"{med / base:8.2f}", flush=True)


if __name__ == "__main__":
  main()
