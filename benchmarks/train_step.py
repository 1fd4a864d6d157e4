"""Images/s of the jitted train step, xrda against optax.sgd(momentum=0.9), and of the input
pipeline alone, on the same machine in one run.

    python -m benchmarks.train_step [--models lenet5,resnet20,vgg16] [--steps 20] [--data_dir D]

Each train step is the loop's own (`train.train_step`: forward, backward, optimizer update,
BatchNorm statistics), jitted with the state donated, on random batches of the dataset's shape
at batch 128; timed over `--steps` steps after two warm-up steps. The pipeline figure is the
cached training epoch of `train.input_pipeline` (MNIST for LeNet-5, CIFAR-10 for the others).
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.common import machine
from train import train
from train.configs import default

SETUPS = {  # model -> (dataset, image shape, classes)
    "lenet5": ("mnist", (28, 28, 1), 10),
    "resnet20": ("cifar10", (32, 32, 3), 10),
    "vgg16": ("cifar10", (32, 32, 3), 10),
}


class _Info:
  def __init__(self, shape, classes):
    self.image_shape, self.num_classes = shape, classes


def step_rate(model_name: str, optimizer: str, batch: int, steps: int) -> float:
  dataset, shape, classes = SETUPS[model_name]
  config = default.get_config()
  config.model, config.dataset, config.optimizer = model_name, dataset, optimizer
  total = 10_000
  tx = train.create_optimizer(config, total_steps=total, steps_per_epoch=100)
  model, state = train.create_train_state(config, _Info(shape, classes), tx)
  step = jax.jit(functools.partial(train.train_step, model, tx), donate_argnums=0)
  rng = np.random.default_rng(0)
  data = {"image": jnp.asarray(rng.normal(size=(batch, *shape)), jnp.float32),
          "label": jnp.asarray(rng.integers(0, classes, batch), jnp.int32)}
  for _ in range(2):
    state, metrics = step(state, data)
  jax.block_until_ready(metrics)
  times = []
  for _ in range(steps):
    t0 = time.perf_counter()
    state, metrics = step(state, data)
    jax.block_until_ready(metrics)
    times.append(time.perf_counter() - t0)
  return batch / statistics.median(times)


def pipeline_rate(dataset: str, batch: int, data_dir: str | None) -> float:
  from train import input_pipeline
  for epoch in range(2):  # the first epoch fills the cache
    t0, images = time.perf_counter(), 0
    for b in input_pipeline.create_split(dataset, "train", batch, train=True, epoch=epoch,
                                         data_dir=data_dir):
      images += len(b["label"])
  return images / (time.perf_counter() - t0)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--models", default="lenet5,resnet20,vgg16")
  parser.add_argument("--steps", type=int, default=20)
  parser.add_argument("--batch", type=int, default=128)
  parser.add_argument("--data_dir", default=None)
  args = parser.parse_args(argv)
  print(f"machine: {machine()}")
  print(f"batch {args.batch}; median of {args.steps} steps\n")
  print(f"{'model':10s} {'sgd img/s':>10s} {'xrda img/s':>11s} {'xrda/sgd':>9s} "
        f"{'pipeline img/s':>15s} {'pipeline/xrda':>14s}")
  pipelines = {}
  for name in args.models.split(","):
    sgd = step_rate(name, "sgd", args.batch, args.steps)
    xrda = step_rate(name, "xrda", args.batch, args.steps)
    dataset = SETUPS[name][0]
    if dataset not in pipelines:
      pipelines[dataset] = pipeline_rate(dataset, args.batch, args.data_dir)
    pipe = pipelines[dataset]
    print(f"{name:10s} {sgd:10.0f} {xrda:11.0f} {xrda / sgd:9.2f} {pipe:15.0f} {pipe / xrda:14.1f}",
          flush=True)


if __name__ == "__main__":
  main()
