"""How to spend two cores on many small trainings: configurations vmapped in one program, or
separate processes, pinned to a core each or not.

    python -m benchmarks.sweep_throughput [--epochs 6] [--vmap 1,4,8] [--skip_processes]

1. One jitted LeNet-300-100 xrda step (batch 128, params and state donated), vmapped over K
   configurations that share the batch: ms per configuration-step for each K (a compute-bound
   model gains little from batching configurations).
2. Two real trainings (`train.main`, LeNet-300-100 xrda on MNIST, `--epochs` epochs each) side by
   side, unpinned and then pinned to one core each (what `benchmarks.sweeps` does): wall time
   for both, and their steady epoch times.
Run it on an idle machine: it measures the machine's throughput.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import machine

REPO = Path(__file__).resolve().parents[1]


def vmapped_step_ms(k: int, steps: int = 200) -> float:
  """Milliseconds per step of K vmapped LeNet-300-100 xrda configurations."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  import optax  # pylint: disable=g-import-not-at-top
  from flax import nnx  # pylint: disable=g-import-not-at-top

  import models  # pylint: disable=g-import-not-at-top
  import sparse_optax as so  # pylint: disable=g-import-not-at-top

  model = models.get_model("lenet300100", 10, rngs=nnx.Rngs(0))
  graphdef, params = nnx.split(model, nnx.Param)
  tx = so.xrda(1.0, 0.5, 5e-6, momentum_timescale=9.5, maximum_factor=500.0, weight_decay=5e-4)

  def step(p, s, x, y):
    def loss(p):
      logits = nnx.merge(graphdef, p)(x)
      return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
    u, s = tx.update(jax.grad(loss)(p), s, p)
    return optax.apply_updates(p, u), s

  ps = jax.tree.map(lambda a: jnp.stack([a] * k), params)
  ss = jax.vmap(tx.init)(ps)
  f = jax.jit(jax.vmap(step, in_axes=(0, 0, None, None)), donate_argnums=(0, 1))
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.random((128, 28, 28, 1)), jnp.float32)
  y = jnp.asarray(rng.integers(0, 10, 128))
  ps, ss = f(ps, ss, x, y)
  jax.block_until_ready(ps)
  start = time.perf_counter()
  for _ in range(steps):
    ps, ss = f(ps, ss, x, y)
  jax.block_until_ready(ps)
  return 1e3 * (time.perf_counter() - start) / steps


def two_trainings(epochs: int, pinned: bool) -> dict:
  """Wall seconds for two LeNet-300-100 trainings side by side, and their epoch times."""
  cores = sorted(os.sched_getaffinity(0))
  with tempfile.TemporaryDirectory() as tmp:
    procs = []
    start = time.perf_counter()
    for i in range(2):
      command = [sys.executable, "-m", "train.main",
                 f"--config={REPO / 'train/configs/lenet300100_mnist_xrda.py'}",
                 f"--workdir={tmp}/{i}", f"--config.num_epochs={epochs}",
                 "--config.progress_bar=False"]
      pin = (lambda c=cores[i % len(cores)]: os.sched_setaffinity(0, {c})) if pinned else None
      procs.append(subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL, preexec_fn=pin,
                                    env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")))
    codes = [p.wait() for p in procs]
    wall = time.perf_counter() - start
    if any(codes):
      raise RuntimeError(f"a training failed: exit codes {codes}")
    epoch_times = []
    for i in range(2):
      lines = Path(f"{tmp}/{i}/metrics.jsonl").read_text().splitlines()
      records = [json.loads(line) for line in lines]
      epoch_times.append([round(r["epoch_time_s"], 2) for r in records[1:]])  # after compiling
  return {"pinned": pinned, "wall_s": round(wall, 1), "epoch_times_s": epoch_times}


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--epochs", type=int, default=6)
  parser.add_argument("--vmap", default="1,4,8")
  parser.add_argument("--skip_processes", action="store_true")
  args = parser.parse_args(argv)
  print(machine())
  for k in [int(v) for v in args.vmap.split(",") if v]:
    ms = vmapped_step_ms(k)
    print(f"vmapped configurations K={k}: {ms:.2f} ms a step, {ms / k:.2f} ms a configuration")
  if not args.skip_processes:
    for pinned in (False, True):
      print(json.dumps(two_trainings(args.epochs, pinned)))


if __name__ == "__main__":
  main()
