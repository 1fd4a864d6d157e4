"""What an export measures, apart from writing it: parameters and non-zeros, bytes, FLOPs per
example and latency dense against compact, each layer's treatment, and the test accuracy
re-measured through the artifact (``train.export`` puts them in ``report.json``)."""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from etils import epath
from flax import nnx

from models import sparse_layers
from train import input_pipeline, run_folder, steps

LATENCY_BATCHES = (1, 128)
EVAL_BATCH = 128  # a shape the latency runs compile anyway




def input_dtype(config: dict[str, Any]) -> Any:
  """The model input's dtype: int32 tokens for a language model, float32 images otherwise."""
  return jnp.int32 if input_pipeline.spec(config["dataset"]).text else jnp.float32


def positions(model: nnx.Module, input_shape: Sequence[int],
              dtype: Any = jnp.float32) -> dict[tuple[Any, ...], int]:
  """Output positions (H × W, T for tokens; 1 for a linear layer on a vector) of each module's
  call, per example."""
  graphdef, state = nnx.split(model)

  def outputs(state, images):
    module = nnx.merge(graphdef, state)
    return nnx.capture(module, nnx.Intermediate, method_outputs=nnx.Intermediate)(images)[1]

  shapes = jax.eval_shape(outputs, state, jax.ShapeDtypeStruct((1, *input_shape), dtype))
  positions = {}
  for path, var in nnx.to_flat_state(shapes):
    if path[-1] == "__call__":
      (out,) = var.get_value()
      positions[path[:-1]] = math.prod(out.shape[1:-1])
  return positions


def _layers(model: nnx.Module) -> dict[tuple[Any, ...], nnx.Module]:
  kinds = (nnx.Linear, nnx.Conv, sparse_layers.SparseLinear, sparse_layers.SparseConv,
           sparse_layers.NMLinear, sparse_layers.NMConv, nnx.LinearGeneral,
           sparse_layers.NMLinearGeneral)
  return {path: m for path, m in nnx.iter_modules(model) if isinstance(m, kinds)}


def leaves(model: nnx.Module, *kinds: type) -> list[np.ndarray]:
  return [np.asarray(x) for x in jax.tree.leaves(nnx.state(model, *kinds))]


def nbytes(arrays: Sequence[np.ndarray]) -> int:
  return int(sum(a.nbytes for a in arrays))


def layer_rows(dense: nnx.Module, compact: nnx.Module, positions: dict[tuple[Any, ...], int],
                order: Sequence[str]) -> list[dict[str, Any]]:
  """What was done to each conv, linear layer and attention projection (``LinearGeneral``), with
  its bytes and FLOPs, in forward order."""
  dense_layers, compact_layers = _layers(dense), _layers(compact)
  rows = []
  for path, before in dense_layers.items():
    after = compact_layers[path]
    kernel = np.asarray(before.kernel.get_value())
    kind = ("conv" if isinstance(before, nnx.Conv) else
            "attention" if isinstance(before, nnx.LinearGeneral) else "linear")
    per_example = positions[path]
    if kind == "attention":  # outputs (..., *out_features): the heads were counted as positions
      per_example //= math.prod(tuple(before.out_features)[:-1])
    if isinstance(after, (sparse_layers.SparseLinear, sparse_layers.SparseConv)):
      shape, stored = after.kernel_shape, "bcoo"
      nonzeros = int(after.data.get_value().size)
      compact_bytes = nbytes([np.asarray(after.data.get_value()),
                               np.asarray(after.indices.get_value())])
      index_dtype = str(after.indices.get_value().dtype)
      if isinstance(after, sparse_layers.SparseLinear):
        compute, macs = "bcoo_matmul", nonzeros
      elif after.mode == "im2col":
        compute, macs = "im2col_bcoo_matmul", nonzeros
      else:
        compute, macs = "densified_conv", math.prod(shape)
    elif isinstance(after, (sparse_layers.NMLinear, sparse_layers.NMConv,
                            sparse_layers.NMLinearGeneral)):
      # Values and their positions in each group; rebuilt dense per call, so dense FLOPs.
      shape, stored, compute = after.kernel_shape, "nm", "densified"
      values, indices = (np.asarray(after.values.get_value()),
                         np.asarray(after.indices.get_value()))
      nonzeros, compact_bytes = int(np.count_nonzero(values)), nbytes([values, indices])
      index_dtype, macs = str(indices.dtype), math.prod(shape)
    else:
      after_kernel = np.asarray(after.kernel.get_value())
      shape, stored, compute = after_kernel.shape, "dense", "dense"
      nonzeros, compact_bytes = int(np.count_nonzero(after_kernel)), int(after_kernel.nbytes)
      index_dtype, macs = None, after_kernel.size
    thinned = tuple(shape) != kernel.shape
    how = "+".join((["thinned"] if thinned else []) + [stored])
    if stored == "nm":
      how += f"({':'.join(map(str, after.pattern))}, densified per call)"
    if stored == "bcoo" and kind == "conv":
      how += "(im2col)" if compute.startswith("im2col") else "(densified per call)"
    rows.append({
        "name": ".".join(map(str, path)), "kind": kind, "how": how, "thinned": thinned,
        "stored": stored, "compute": compute,
        "kernel_before": list(kernel.shape), "kernel_after": list(shape),
        "nonzeros": nonzeros, "index_dtype": index_dtype,
        "dense_bytes": int(kernel.nbytes), "compact_bytes": compact_bytes,
        "flops_dense": per_example * kernel.size, "flops_compact": per_example * macs,
    })
  rank = {name: i for i, name in enumerate(order)}
  return sorted(rows, key=lambda row: rank.get(row["name"], len(rank)))


def latency_ms(fns: dict[str, Callable], input_shape: Sequence[int], calls: int,
               max_seconds: float = 20.0, vocab: int | None = None) -> dict[str, dict[str, float]]:
  """Median wall time of ``fn(images)`` per function and batch size, after two warm-up calls
  (``vocab``: the inputs are tokens below it).

  The functions are called in turn, so that a change in the machine's load hits them alike.
  At least 3 calls each, up to ``calls`` or until ``max_seconds`` have passed.
  """
  out = {name: {} for name in fns}
  for batch in LATENCY_BATCHES:
    shape = (batch, *input_shape)
    images = (jax.random.normal(jax.random.key(0), shape, jnp.float32) if vocab is None else
              jax.random.randint(jax.random.key(0), shape, 0, vocab, jnp.int32))
    for fn in fns.values():
      for _ in range(2):
        jax.block_until_ready(fn(images))
    times = {name: [] for name in fns}
    deadline = time.perf_counter() + max_seconds
    for i in range(calls):
      for name, fn in fns.items():
        start = time.perf_counter()
        jax.block_until_ready(fn(images))
        times[name].append(time.perf_counter() - start)
      if i >= 2 and time.perf_counter() > deadline:
        break
    for name in fns:
      out[name][f"batch_{batch}"] = 1e3 * statistics.median(times[name])
  return out


def evaluate(config: dict[str, Any], dense: Callable, compact: Callable) -> dict[str, Any]:
  """Test accuracy of both, the predictions that differ and the largest logit difference (per
  token for a language model)."""
  batches = input_pipeline.create_split(
      config["dataset"], config.get("eval_split") or "test", EVAL_BATCH, train=False,
      data_dir=config.get("data_dir"), drop_remainder=False)
  count = correct_dense = correct_compact = flipped = 0
  max_diff = 0.0
  for batch in batches:
    inputs, labels = np.asarray(steps.model_input(batch)), np.asarray(batch["label"])
    n = len(labels)
    padded = np.zeros((EVAL_BATCH, *inputs.shape[1:]), inputs.dtype)  # one compiled shape
    padded[:n] = inputs
    logits_dense = np.asarray(dense(padded))[:n]
    logits_compact = np.asarray(compact(padded))[:n]
    pred_dense, pred_compact = logits_dense.argmax(-1), logits_compact.argmax(-1)
    count += labels.size
    correct_dense += int((pred_dense == labels).sum())
    correct_compact += int((pred_compact == labels).sum())
    flipped += int((pred_dense != pred_compact).sum())
    max_diff = max(max_diff, float(np.abs(logits_dense - logits_compact).max(initial=0.0)))
  if not count:
    raise ValueError(f"The {config['dataset']} split {config.get('eval_split')!r} is empty.")
  return {"test_examples": count, "test_accuracy": correct_compact / count,
          "test_accuracy_dense": correct_dense / count, "flipped_predictions": flipped,
          "max_abs_logit_difference": max_diff}


def logged_accuracy(workdir: run_folder.PathLike, step: int) -> float | None:
  """The test accuracy the training loop logged for ``step``, if it did."""
  for record in reversed(run_folder.records(workdir)):
    if record.get("step") == step and "test_accuracy" in record:
      return record["test_accuracy"]
  return None


def directory_bytes(path: epath.Path) -> int:
  """Bytes of the files under ``path`` (epath has no recursive glob: a bucket would list it
  file by file)."""
  return sum(directory_bytes(p) if p.is_dir() else p.stat().length for p in path.iterdir())


def summary(report: dict[str, Any]) -> str:
  """A few lines of the report for people."""
  lines = [
      f"{report['model']} ({report['format']}): {report['params']:,} params "
      f"({report['params_dense']:,} dense), {report['nonzeros']:,} non-zeros",
      f"memory {report['dense_bytes']:,} -> {report['compact_bytes']:,} bytes, artifact "
      f"{report['artifact_bytes']:,} bytes on disk (checkpoint {report['checkpoint_bytes']:,})",
      f"FLOPs per example {report['flops']['dense']:,} -> {report['flops']['compact']:,}",
  ]
  for batch in LATENCY_BATCHES if "latency_ms" in report else ():
    key = f"batch_{batch}"
    lines.append(f"latency batch {batch}: {report['latency_ms']['dense'][key]:.3f} -> "
                 f"{report['latency_ms']['compact'][key]:.3f} ms")
  if "test_accuracy" in report:
    lines.append(f"test accuracy {report['test_accuracy_dense']:.4f} -> "
                 f"{report['test_accuracy']:.4f} ({report['flipped_predictions']} of "
                 f"{report['test_examples']} predictions flipped)")
  lines += [f"  {row['name']}: {row['how']}" for row in report["layers"]]
  return "\n".join(lines)


def measure(workdir: run_folder.PathLike, config: dict[str, Any], step: int, dense: nnx.Module,
            compact: nnx.Module, exported_params: Sequence[np.ndarray], layer_order: Sequence[str],
            dense_fn: Callable, compact_fn: Callable, *, evaluate_accuracy: bool,
            latency_calls: int) -> dict[str, Any]:
  """The measured part of an export's report: ``dense`` is the trained model, ``compact`` the
  exported one (``exported_params``: its params before BCOO storage), ``dense_fn`` and
  ``compact_fn`` their forward passes through the same exported path."""
  spec = input_pipeline.spec(config["dataset"])
  input_shape = tuple(spec.image_shape)
  layers = layer_rows(dense, compact, positions(dense, input_shape, input_dtype(config)),
                      layer_order)
  dense_params = leaves(dense, nnx.Param)
  compact_params = leaves(compact, nnx.Param, sparse_layers.Indices)
  report = {
      "params_dense": int(sum(p.size for p in dense_params)),
      "params": int(sum(p.size for p in exported_params)),
      "nonzeros_dense": int(sum(np.count_nonzero(p) for p in dense_params)),
      "nonzeros": int(sum(np.count_nonzero(p) for p in exported_params)),
      "dense_bytes": nbytes(dense_params),
      "compact_bytes": nbytes(compact_params),
      "batch_stats_bytes": {"dense": nbytes(leaves(dense, nnx.BatchStat)),
                            "compact": nbytes(leaves(compact, nnx.BatchStat))},
      "checkpoint_bytes": directory_bytes(run_folder.checkpoints_dir(workdir) / str(step)),
      # Multiply-adds per example of the convs, linear layers and attention projections.
      "flops": {"dense": sum(row["flops_dense"] for row in layers),
                "compact": sum(row["flops_compact"] for row in layers)},
      "layers": layers,
  }
  if latency_calls:
    report["latency_ms"] = latency_ms({"dense": dense_fn, "compact": compact_fn}, input_shape,
                                      latency_calls, vocab=spec.num_classes if spec.text else None)
  if evaluate_accuracy:
    report.update(evaluate(config, dense_fn, compact_fn))
    report["logged_test_accuracy"] = logged_accuracy(workdir, step)
  return report
