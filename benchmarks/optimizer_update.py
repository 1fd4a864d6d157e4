"""Time one optimizer update on a ResNet-18-sized tree (11.2M float32 params) against its
memory-bandwidth floor.

    python -m benchmarks.optimizer_update [--reps 30] [--width 1]

`--width N` multiplies every channel count by N (about N² times the params): on a GPU the
ResNet-18 tree is too small for bytes to dominate launches, so the floor needs a wider one.

Columns: the median and best time; the floor and the time over it (time per byte moved, in
units of the copy's); the optimizer state in bytes per parameter; and the time per byte moved
relative to `optax.sgd(momentum=0.9)`'s (1.0: as efficient per byte as sgd). `bf16 acc.`:
`accumulator_dtype=jnp.bfloat16` (v and r in bfloat16, z and B in float32).

Every update runs jitted, params and state donated. The floor of an exact update is the bytes it
must move — read params, grads and state, write params and state — divided by the machine's
copy bandwidth, measured in the same run as a jitted `x + 1` over one tree (read + write).
"""

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import optax

import sparse_optax as so
from benchmarks.common import machine


def resnet18_shapes(num_classes=10, width=1):
  """Parameter shapes of the CIFAR ResNet-18 (HWIO convs, BatchNorm scale/bias, linear head)."""
  cin = 64 * width
  shapes = [(3, 3, 3, cin), (cin,), (cin,)]
  for cout, stride in ((64 * width, 1), (128 * width, 2), (256 * width, 2), (512 * width, 2)):
    for block in range(2):
      s = stride if block == 0 else 1
      shapes += [(3, 3, cin, cout), (cout,), (cout,), (3, 3, cout, cout), (cout,), (cout,)]
      if s != 1 or cin != cout:
        shapes += [(1, 1, cin, cout), (cout,), (cout,)]
      cin = cout
  return shapes + [(cin, num_classes), (num_classes,)]


def tree_bytes(tree):
  return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(tree))


def time_fn(fn, args, reps):
  args = fn(*args)  # compile + warm up; donated inputs are consumed, keep the outputs
  jax.block_until_ready(args)
  times = []
  for _ in range(reps):
    t0 = time.perf_counter()
    args = jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - t0)
  return statistics.median(times), min(times)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--reps", type=int, default=30)
  parser.add_argument("--width", type=int, default=1, help="channel multiplier of the tree")
  args = parser.parse_args()
  if args.width < 1:
    parser.error(f"--width must be a positive integer, got {args.width}")

  keys = jax.random.split(jax.random.key(0), 64)
  params = {f"p{i:02d}": 0.05 * jax.random.normal(keys[i], s)
            for i, s in enumerate(resnet18_shapes(width=args.width))}
  grads = jax.tree.map(lambda x: 0.01 * jnp.ones_like(x), params)
  n = sum(x.size for x in jax.tree.leaves(params))
  pbytes = tree_bytes(params)

  print(f"machine: {machine()}")
  name = "ResNet-18" if args.width == 1 else f"ResNet-18 x{args.width} width"
  print(f"tree: {name} CIFAR shapes, {n:,} float32 params ({pbytes / 1e6:.1f} MB)")

  copy = jax.jit(lambda t: (jax.tree.map(lambda x: x + 1, t),), donate_argnums=0)
  t_copy, _ = time_fn(copy, (jax.tree.map(jnp.copy, params),), args.reps)
  bandwidth = 2 * pbytes / t_copy
  print(f"copy (read + write one tree): {t_copy * 1e3:7.2f} ms  -> {bandwidth / 1e9:.2f} GB/s\n")

  total = 1000
  cases = [("optax.sgd(momentum=0.9)", optax.sgd(0.1, momentum=0.9))] + [
      (f"xrda {s}{' bf16 acc.' if dtype else ''}",
       so.xrda(so.cosine_decay(1.0, total), so.cosine_averaging(total), 1e-6,
               momentum_timescale=9.5, weight_decay=5e-4, structure=s, accumulator_dtype=dtype))
      for dtype in (None, jnp.bfloat16) for s in so.STRUCTURES
  ]
  print(f"{'update':28s} {'median ms':>10s} {'min ms':>8s} {'floor ms':>9s} {'/floor':>7s} "
        f"{'state B/param':>14s} {'ms/GB vs sgd':>13s}")
  per_byte_sgd = None
  for name, tx in cases:
    state = tx.init(params)
    sbytes = tree_bytes(state)
    floor = (2 * pbytes + tree_bytes(grads) + 2 * sbytes) / bandwidth

    def step(p, s, g, tx=tx):
      u, s = tx.update(g, s, p)
      return optax.apply_updates(p, u), s, g

    fn = jax.jit(step, donate_argnums=(0, 1))
    med, best = time_fn(fn, (jax.tree.map(jnp.copy, params), state, grads), args.reps)
    per_byte = med / floor  # time per byte moved, in units of the copy's
    per_byte_sgd = per_byte_sgd or per_byte
    print(f"{name:28s} {med * 1e3:10.2f} {best * 1e3:8.2f} {floor * 1e3:9.2f} "
          f"{med / floor:7.2f} {sbytes / n:14.2f} {per_byte / per_byte_sgd:13.2f}")


if __name__ == "__main__":
  main()
