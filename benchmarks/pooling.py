"""Images/s of the loop's jitted xrda train step with the models' 2×2 max-pool
(`models.pooling.max_pool_2x2`, a reshape and a max) against flax's `nnx.max_pool` (XLA's
reduce-window, select-and-scatter in the gradient), on one process.

    taskset -c 0 python -m benchmarks.pooling [--models lenet5,vgg16] [--steps 20]

Pin it to one core to see what one sweep trial sees (the runner pins each to its own core).
"""

from __future__ import annotations

import argparse

from flax import nnx

from benchmarks import train_step
from benchmarks.common import machine
from models import pooling


def _flax_pool(x):
  return nnx.max_pool(x, (2, 2), strides=(2, 2))


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--models", default="lenet5,vgg16")
  parser.add_argument("--steps", type=int, default=20)
  parser.add_argument("--batch", type=int, default=128)
  args = parser.parse_args(argv)
  print(f"machine: {machine()}")
  print(f"xrda train step, batch {args.batch}; median of {args.steps} steps\n")
  print(f"{'model':8s} {'nnx.max_pool img/s':>19s} {'max_pool_2x2 img/s':>19s} {'speed-up':>9s}")
  ours = pooling.max_pool_2x2
  for name in args.models.split(","):
    try:
      pooling.max_pool_2x2 = _flax_pool
      flax_rate = train_step.step_rate(name, "xrda", args.batch, args.steps)
    finally:
      pooling.max_pool_2x2 = ours
    rate = train_step.step_rate(name, "xrda", args.batch, args.steps)
    print(f"{name:8s} {flax_rate:19.0f} {rate:19.0f} {rate / flax_rate:8.2f}x", flush=True)


if __name__ == "__main__":
  main()
