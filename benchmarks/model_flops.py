r"""Forward FLOPs per example of registered models, by XLA's cost analysis, and an epoch's cost.

::

  python -m benchmarks.model_flops                         # resnet20, vit, vit_ti on CIFAR-10
  python -m benchmarks.model_flops --models lm --input_shape 128 --num_classes 256 --examples 35000

FLOPs are those XLA counts for one jitted forward pass of a batch (``cost_analysis()["flops"]``,
a multiply-add counting 2), divided by the batch. A training step costs about three forward
passes, so an epoch costs about ``3 × examples × forward FLOPs``; the ratio to the first model
is printed beside each. ``--time N`` also times the loop's own jitted train step (SGD, batch
128, random inputs, the median of N steps after two warm-up steps) and prints an epoch's
seconds at that rate: on a CPU, FLOPs are not time.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

import models


def forward_flops(name: str, input_shape: Sequence[int], num_classes: int = 10,
                  batch: int = 8) -> tuple[float, int]:
  """(forward FLOPs per example, parameter count) of model ``name`` in evaluation mode."""
  model = models.get_model(name, num_classes, input_shape=tuple(input_shape), rngs=nnx.Rngs(0))
  model.eval()
  graphdef, state = nnx.split(model)
  dtype = jnp.int32 if len(input_shape) == 1 else jnp.float32  # tokens, or an image
  x = jnp.zeros((batch, *input_shape), dtype)
  forward = jax.jit(lambda s, x: nnx.merge(graphdef, s)(x))
  cost = forward.lower(state, x).compile().cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  params = sum(int(p.size) for p in jax.tree.leaves(nnx.state(model, nnx.Param)))
  return float(cost["flops"]) / batch, params


def step_seconds(name: str, input_shape: Sequence[int], num_classes: int = 10,
                 batch: int = 128, steps: int = 5) -> float:
  """Median seconds of the loop's jitted SGD train step of model ``name`` on random inputs."""
  import numpy as np  # pylint: disable=g-import-not-at-top

  from train import steps as train_steps  # pylint: disable=g-import-not-at-top
  from train import methods  # pylint: disable=g-import-not-at-top
  from train.configs import default  # pylint: disable=g-import-not-at-top
  config = default.get_config()
  config.model, config.optimizer = name, "sgd"
  info = type("Info", (), {"image_shape": tuple(input_shape), "num_classes": num_classes})
  tx = methods.create_optimizer(config, total_steps=1000, steps_per_epoch=100)
  model, state = train_steps.create_train_state(config, info, tx)
  step = jax.jit(functools.partial(train_steps.train_step, model, tx), donate_argnums=0)
  rng = np.random.default_rng(0)
  if len(input_shape) == 1:  # tokens and next-token targets
    tokens = jnp.asarray(rng.integers(0, num_classes, (batch, *input_shape)), jnp.int32)
    data = {"tokens": tokens, "label": tokens}
  else:
    data = {"image": jnp.asarray(rng.normal(size=(batch, *input_shape)), jnp.float32),
            "label": jnp.asarray(rng.integers(0, num_classes, batch), jnp.int32)}
  times = []
  for i in range(steps + 2):
    start = time.perf_counter()
    state, metrics = step(state, data)
    jax.block_until_ready(metrics)
    if i >= 2:
      times.append(time.perf_counter() - start)
  return statistics.median(times)


def main(argv: Sequence[str] | None = None) -> None:
  parser = argparse.ArgumentParser(prog="python -m benchmarks.model_flops")
  parser.add_argument("--models", nargs="+", default=["resnet20", "vit", "vit_ti"])
  parser.add_argument("--input_shape", nargs="+", type=int, default=[32, 32, 3])
  parser.add_argument("--num_classes", type=int, default=10)
  parser.add_argument("--examples", type=int, default=50000, help="examples in an epoch")
  parser.add_argument("--time", type=int, default=0, metavar="N",
                      help="also time N train steps of batch --batch (0: no timing)")
  parser.add_argument("--batch", type=int, default=128)
  args = parser.parse_args(argv)
  print(f"{'model':<10} {'params':>10} {'fwd MFLOPs/ex':>14} {'epoch TFLOPs':>13} {'ratio':>6}"
        + (f" {'s/step':>7} {'epoch min':>9}" if args.time else ""))
  first = None
  for name in args.models:
    flops, params = forward_flops(name, args.input_shape, args.num_classes)
    first = first or flops
    line = (f"{name:<10} {params:>10,} {flops / 1e6:>14.1f} "
            f"{3 * args.examples * flops / 1e12:>13.2f} {flops / first:>6.2f}")
    if args.time:
      seconds = step_seconds(name, args.input_shape, args.num_classes, args.batch, args.time)
      line += f" {seconds:>7.3f} {seconds * args.examples / args.batch / 60:>9.1f}"
    print(line, flush=True)


if __name__ == "__main__":
  main()
