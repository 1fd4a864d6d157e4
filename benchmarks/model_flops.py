r"""Forward FLOPs per example of registered models, by XLA's cost analysis, and an epoch's cost.

::

  python -m benchmarks.model_flops                         # resnet20, vit, vit_ti on CIFAR-10
  python -m benchmarks.model_flops --models lm --input_shape 128 --num_classes 256 --examples 35000

FLOPs are those XLA counts for one jitted forward pass of a batch (``cost_analysis()["flops"]``,
a multiply-add counting 2), divided by the batch. A training step costs about three forward
passes, so an epoch costs about ``3 × examples × forward FLOPs``; the ratio to the first model
is printed beside each.
"""

from __future__ import annotations

import argparse
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


def main(argv: Sequence[str] | None = None) -> None:
  parser = argparse.ArgumentParser(prog="python -m benchmarks.model_flops")
  parser.add_argument("--models", nargs="+", default=["resnet20", "vit", "vit_ti"])
  parser.add_argument("--input_shape", nargs="+", type=int, default=[32, 32, 3])
  parser.add_argument("--num_classes", type=int, default=10)
  parser.add_argument("--examples", type=int, default=50000, help="examples in an epoch")
  args = parser.parse_args(argv)
  rows, first = [], None
  for name in args.models:
    flops, params = forward_flops(name, args.input_shape, args.num_classes)
    first = first or flops
    rows.append((name, params, flops, 3 * args.examples * flops, flops / first))
  print(f"{'model':<10} {'params':>10} {'fwd MFLOPs/ex':>14} {'epoch TFLOPs':>13} {'ratio':>6}")
  for name, params, flops, epoch, ratio in rows:
    print(f"{name:<10} {params:>10,} {flops / 1e6:>14.1f} {epoch / 1e12:>13.2f} {ratio:>6.2f}")


if __name__ == "__main__":
  main()
