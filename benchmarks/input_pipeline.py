"""Throughput of the input pipeline alone (train/input_pipeline.py), in images/s.

Times whole training epochs after the first one, which fills the in-memory cache
of decoded examples; the first epoch (TFDS read + PNG decode) is reported apart.

    python -m benchmarks.input_pipeline --data_dir /tmp/tfds [--datasets mnist,cifar10]

Datasets missing from --data_dir are prepared from local raw files when a known
copy exists (see train/data/), else TFDS downloads them.
"""

from __future__ import annotations

import argparse
import time

from benchmarks.common import machine
from train import input_pipeline
from train.data import preparation


def epoch_time(name: str, batch_size: int, data_dir: str | None, epoch: int) -> tuple[float, int]:
  start = time.perf_counter()
  images = 0
  for batch in input_pipeline.create_split(name, "train", batch_size, train=True, epoch=epoch,
                                           data_dir=data_dir):
    images += batch["label"].shape[0]
  return time.perf_counter() - start, images


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--data_dir", default="/tmp/tfds")
  parser.add_argument("--datasets", default="mnist,cifar10")
  parser.add_argument("--batch_size", type=int, default=128)
  parser.add_argument("--epochs", type=int, default=3, help="timed epochs after the first")
  args = parser.parse_args()

  print(f"machine: {machine()}")
  for name in args.datasets.split(","):
    preparation.maybe_prepare(name, args.data_dir)
    seconds, images = epoch_time(name, args.batch_size, args.data_dir, epoch=0)
    print(f"{name}: first epoch (read, decode, cache) {images / seconds:,.0f} images/s "
          f"({seconds:.1f} s)")
    rates = []
    for epoch in range(1, args.epochs + 1):
      seconds, images = epoch_time(name, args.batch_size, args.data_dir, epoch)
      rates.append(images / seconds)
    rates.sort()
    print(
        f"{name}: train, batch {args.batch_size}, cached: median "
        f"{rates[len(rates) // 2]:,.0f} images/s "
        f"(min {rates[0]:,.0f}, max {rates[-1]:,.0f}; {images} images/epoch, {args.epochs} epochs)"
    )


if __name__ == "__main__":
  main()
