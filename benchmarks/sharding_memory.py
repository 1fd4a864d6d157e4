"""Per-device bytes of params + optimizer state under config.sharding, for a config's model.

    python -m benchmarks.sharding_memory [--config=train/configs/vgg16_cifar10_xrda.py] [--devices 8]

Computed from shapes (`jax.eval_shape`, no device memory used): a leaf that `fsdp` splits
holds 1/devices of its bytes on each device, a replicated one all of them.
"""

import argparse
import importlib.util

import jax

from train import methods, steps


def _load(path):
  spec = importlib.util.spec_from_file_location("config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--config", default="train/configs/vgg16_cifar10_xrda.py")
  parser.add_argument("--devices", type=int, default=8)
  parser.add_argument("--structure", default=None, help="override config.structure")
  args = parser.parse_args()
  config = _load(args.config)
  if args.structure:
    config.structure = args.structure
  num_classes, image_shape = {"cifar10": (10, (32, 32, 3)), "cifar100": (100, (32, 32, 3)),
                              "mnist": (10, (28, 28, 1)), "fashion_mnist": (10, (28, 28, 1))
                              }[config.dataset]
  info = type("Info", (), {"num_classes": num_classes, "image_shape": image_shape})
  tx = methods.create_optimizer(config, total_steps=1000, steps_per_epoch=10)
  state = jax.eval_shape(lambda: steps.create_train_state(config, info, tx)[1])
  print(f"{config.model} / {config.optimizer} ({config.structure}), {args.devices} devices")
  print(f"{'sharding':12s} {'params MB':>10s} {'opt state MB':>13s} {'total MB / device':>18s}")
  for mode in steps.SHARDINGS:
    sizes = {}
    for part in ("params", "opt_state"):
      total = 0
      for leaf in jax.tree.leaves(state[part]):
        axis = steps.fsdp_axis(leaf.shape, args.devices) if mode == "fsdp" else None
        total += leaf.size * leaf.dtype.itemsize // (1 if axis is None else args.devices)
      sizes[part] = total / 1e6
    print(f"{mode:12s} {sizes['params']:10.2f} {sizes['opt_state']:13.2f} "
          f"{sizes['params'] + sizes['opt_state']:18.2f}")


if __name__ == "__main__":
  main()
