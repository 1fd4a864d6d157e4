"""Inference of exported runs, dense against compact: memory, disk, FLOPs, latency, accuracy.

    python -m benchmarks.inference --workdir runs/lenet5_mnist_xrda [--workdir DIR ...]

Runs ``train.export`` on each workdir (writing its ``export/``) and prints one markdown row per
run, with the machine it measured on. Then it times how a conv stored as a BCOO can run, on
LeNet-5's two convs: the dense conv, the BCOO densified at each call then a dense conv
(``--conv_mode=densify``, what the export does by default), and im2col patches times the BCOO
(``--conv_mode=im2col``). Their kernels are those of the first LeNet-5 workdir given, at its
checkpoint's sparsity; without one, random kernels at ``--conv_densities``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

import models
from models import pooling, sparse_layers
from benchmarks.common import machine
from train import export, export_report, run_folder


def _bytes(n: float) -> str:
  for unit, size in (("MB", 1e6), ("kB", 1e3)):
    if n >= size:
      return f"{n / size:.3g} {unit}" if n < 100 * size else f"{n / size:.0f} {unit}"
  return f"{n:.0f} B"


def _count(n: float) -> str:
  for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
    if n >= size:
      return f"{n / size:.3g}{unit}"
  return f"{n:.0f}"


def _ms(report: dict, kind: str, batch: int) -> str:
  value = report.get("latency_ms", {}).get(kind, {}).get(f"batch_{batch}")
  return "–" if value is None else f"{value:.3g}"


def runs_table(reports: dict[str, dict]) -> str:
  """One markdown row per exported run."""
  header = ("| run | format | params (non-zeros) | memory dense → compact | disk checkpoint → "
            "artifact | FLOPs/example dense → compact | batch 1 ms dense → compact | batch 128 ms "
            "dense → compact | test accuracy dense → artifact | flipped |")
  lines = [header, "|" + "---|" * header.count(" | ") + "---|"]
  for name, r in reports.items():
    accuracy = ("–" if "test_accuracy" not in r else
                f"{100 * r['test_accuracy_dense']:.2f}% → {100 * r['test_accuracy']:.2f}%")
    flipped = "–" if "flipped_predictions" not in r else (
        f"{r['flipped_predictions']} of {r['test_examples']:,}")
    run = name if name == r["model"] else f"{name} ({r['model']})"
    lines.append(
        f"| {run} | {r['format']} | {r['params_dense']:,} → {r['params']:,} "
        f"({r['nonzeros']:,}) | {_bytes(r['dense_bytes'])} → {_bytes(r['compact_bytes'])} | "
        f"{_bytes(r['checkpoint_bytes'])} → {_bytes(r['artifact_bytes'])} | "
        f"{_count(r['flops']['dense'])} → {_count(r['flops']['compact'])} | "
        f"{_ms(r, 'dense', 1)} → {_ms(r, 'compact', 1)} | "
        f"{_ms(r, 'dense', 128)} → {_ms(r, 'compact', 128)} | {accuracy} | {flipped} |")
  return "\n".join(lines)


def layers_table(report: dict) -> str:
  """What the export did to each layer of one run."""
  lines = ["| layer | kernel | done | non-zeros | bytes dense → compact | "
           "FLOPs/example dense → compact |", "|---|---|---|---|---|---|"]
  for row in report["layers"]:
    shape = "×".join(map(str, row["kernel_before"]))
    if row["thinned"]:
      shape += " → " + "×".join(map(str, row["kernel_after"]))
    lines.append(f"| {row['name']} | {shape} | {row['how']} | {row['nonzeros']:,} | "
                 f"{_bytes(row['dense_bytes'])} → {_bytes(row['compact_bytes'])} | "
                 f"{_count(row['flops_dense'])} → {_count(row['flops_compact'])} |")
  return "\n".join(lines)


# --------------------------------------------------------------------------- LeNet-5's convs


def _jitted(module: nnx.Module):
  """``module(x)`` jitted with its weights as arguments, as the export runs it."""
  graphdef, state = nnx.split(module)
  call = jax.jit(lambda state, x: nnx.merge(graphdef, state)(x))
  return lambda x: call(state, x)


def _sparsify(model: nnx.Module, density: float, seed: int = 0) -> None:
  """Zeroes each conv weight of ``model`` with probability 1 - ``density``."""
  rng = np.random.default_rng(seed)
  for conv in (model.conv1, model.conv2):
    kernel = np.asarray(conv.kernel.get_value())
    conv.kernel.set_value(jnp.asarray(kernel * (rng.random(kernel.shape) < density)))


def conv_study(model: nnx.Module, source: str, calls: int) -> list[dict]:
  """Times LeNet-5's convs dense, densified per call and im2col × BCOO, batch 1 and 128."""
  rows = []
  for batch in export_report.LATENCY_BATCHES:
    images = jax.random.normal(jax.random.key(0), (batch, *model.input_shape))
    # conv2 sees what it sees in the model: conv1's max-pooled outputs.
    inputs = {"conv1": images,
              "conv2": pooling.max_pool_2x2(model.conv1(images))}
    for name, x in inputs.items():
      conv = getattr(model, name)
      kernel = np.asarray(conv.kernel.get_value())
      fns = {"dense": _jitted(conv)}
      for mode in export.CONV_MODES:
        layer = sparse_layers.sparse_layer(conv, mode)
        if layer is not None:  # else a BCOO is not smaller: the export keeps it dense
          fns[mode] = _jitted(layer)
      expected = fns["dense"](x)
      diffs = {mode: float(jnp.max(jnp.abs(fn(x) - expected))) for mode, fn in fns.items()}
      times = {mode: [] for mode in fns}
      for fn in fns.values():  # compile, warm up
        jax.block_until_ready(fn(x))
        jax.block_until_ready(fn(x))
      for _ in range(calls):
        for mode, fn in fns.items():  # in turn: a change of load hits all alike
          start = time.perf_counter()
          jax.block_until_ready(fn(x))
          times[mode].append(time.perf_counter() - start)
      nonzeros = int(np.count_nonzero(kernel))
      positions = int(np.prod(expected.shape[1:-1]))
      rows.append({
          "source": source, "layer": name, "batch": batch, "kernel": list(kernel.shape),
          "density": nonzeros / kernel.size, "nonzeros": nonzeros,
          "macs_dense": positions * kernel.size, "macs_im2col": positions * nonzeros,
          "ms": {mode: 1e3 * statistics.median(t) for mode, t in times.items()},
          "max_abs_difference": diffs,
      })
  return rows


def conv_table(rows: list[dict]) -> str:
  lines = ["| kernels | layer | density | MACs/example dense → im2col | batch | dense conv ms | "
           "BCOO densified per call ms | im2col × BCOO ms |", "|---|---|---|---|---|---|---|---|"]
  for r in rows:
    ms = {mode: f"{r['ms'][mode]:.3g}" if mode in r["ms"] else "kept dense"
          for mode in ("dense", *export.CONV_MODES)}
    lines.append(f"| {r['source']} | {r['layer']} {'×'.join(map(str, r['kernel']))} | "
                 f"{100 * r['density']:.1f}% | {_count(r['macs_dense'])} → "
                 f"{_count(r['macs_im2col'])} | {r['batch']} | {ms['dense']} | {ms['densify']} | "
                 f"{ms['im2col']} |")
  return "\n".join(lines)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--workdir", action="append", required=True,
                      help="a train.main workdir; repeat for several runs")
  parser.add_argument("--format", default="auto", choices=export.FORMATS)
  parser.add_argument("--conv_mode", default="densify", choices=export.CONV_MODES)
  parser.add_argument("--latency_calls", type=int, default=20)
  parser.add_argument("--reuse", action="store_true",
                      help="read an existing export/report.json instead of exporting again")
  parser.add_argument("--conv_densities", default="0.02,0.1,0.3",
                      help="densities of random LeNet-5 conv kernels, without a LeNet-5 workdir")
  parser.add_argument("--conv_calls", type=int, default=30)
  parser.add_argument("--json", help="also write every figure to this file")
  args = parser.parse_args()

  reports = {}
  for workdir in map(Path, args.workdir):
    path = Path(run_folder.export_dir(workdir)) / export.REPORT_FILE
    if args.reuse and path.is_file():
      reports[workdir.name] = json.loads(path.read_text())
    else:
      reports[workdir.name] = export.export(workdir, args.format, conv_mode=args.conv_mode,
                                            latency_calls=args.latency_calls)

  convs = []
  lenet5 = next((w for w in args.workdir
                 if reports[Path(w).name]["model"].startswith("lenet5")), None)
  if lenet5 is not None:
    _, step, model = run_folder.restore(lenet5)
    convs = conv_study(model, f"{Path(lenet5).name} (step {step})", args.conv_calls)
  else:
    for density in map(float, args.conv_densities.split(",")):
      model = models.get_model("lenet5", 10, rngs=nnx.Rngs(0))
      model.eval()
      _sparsify(model, density)
      convs += conv_study(model, f"random, {100 * density:g}% dense", args.conv_calls)

  print(f"Machine: {machine()}\n")
  print(runs_table(reports))
  for name, report in reports.items():
    print(f"\n{name}, {report['format']} (conv mode {report['conv_mode']}):\n")
    print(layers_table(report))
  print("\nLeNet-5's convs stored as a BCOO, three ways to run them (median ms):\n")
  print(conv_table(convs))
  if args.json:
    Path(args.json).write_text(json.dumps(
        {"machine": machine(), "runs": reports, "convs": convs}, indent=2) + "\n")


if __name__ == "__main__":
  main()
