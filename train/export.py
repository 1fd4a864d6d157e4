r"""Exports a trained run for inference: ``python -m train.export --workdir=DIR [--format=auto]``.

Reads the run's latest checkpoint (params and BatchNorm statistics, not the optimizer state)
and its ``config.json``, makes the model compact and writes ``DIR/export/``:

* ``forward.jax``: the eval-mode forward pass ``logits = f(weights, images)``, serialized with
  ``jax.export`` (StableHLO) for any batch size (a symbolic batch dimension), lowered for CPU
  and CUDA (``--platforms``);
* ``weights.npz``: its weights in argument order, BCOO layers as their data and indices;
* ``report.json``: parameters, non-zeros, bytes in memory and on disk, FLOPs and latency
  dense against compact, and the test accuracy re-measured from the artifact.

Loading needs only jax and numpy, no flax and none of this repository: see :func:`load`.

Formats (``--format``):

* ``thin``: structured thinning (``models.thin``): the narrower model of the same family,
  without the channels and neurons whose removal leaves the outputs unchanged; all dense.
* ``sparse``: the trained architecture; each conv and linear kernel stored as a BCOO where
  that is smaller (``sparse_optax.to_compact``).
* ``auto``: ``thin``, then the zeros left (unstructured ones) stored as in ``sparse``.

A linear layer stored as a BCOO multiplies by it (``sparse_optax.compact_matmul``): on a CPU
that is faster than the dense product at batch 1 when very sparse, and slower at batch 128
(LeNet-300-100's first layer, 784x300: 2% dense, 2x slower; 17% dense, 10x slower). BCOO has
no convolution, so a conv stored as a BCOO either (``--conv_mode``) scatters its kernel back
to dense at each call and convolves densely (``densify``, the default: compact at rest, dense
FLOPs, as fast as the dense conv on a CPU), or multiplies the input's im2col patches by the
BCOO (``im2col``: only the non-zero weights are multiplied, but on a CPU up to 30x slower at
batch 128 for LeNet-5's convs; ``python -m benchmarks.inference`` measures both).
``report.json`` says what was done to each layer.

Weights are arguments of the exported function rather than constants baked into it: then they
stay in memory exactly in their compact form (float32 data, int8/int16 indices), where XLA
may constant-fold baked-in ones back into dense arrays; the serialized module stays a few kB;
and the weights are a plain ``.npz``. All formats are exact up to float rounding (summation
order): the report counts the test predictions that flip.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from absl import app, flags, logging
from flax import nnx
from flax.nnx.nn import linear as nnx_linear
from jax.experimental import sparse

import models
import sparse_optax as so
from train import input_pipeline, machine

FORMATS = ("auto", "thin", "sparse")
CONV_MODES = ("densify", "im2col")
PLATFORMS = ("cpu", "cuda")
EXPORT_DIR = "export"
FORWARD_FILE = "forward.jax"
WEIGHTS_FILE = "weights.npz"
REPORT_FILE = "report.json"
LATENCY_BATCHES = (1, 128)
EVAL_BATCH = 128  # a shape the latency runs compile anyway

Path_ = tuple[Any, ...]


def load(export_dir: str | os.PathLike) -> Callable[[Any], Any]:
  """The exported forward pass: ``images [B, H, W, C] float32 -> logits [B, classes]``.

  Needs only jax and numpy: copy this function to the machine that serves the model. Any
  batch size ``B`` works (each new one compiles once).
  """
  # Imported here: the function is whole on its own, to be copied where the model serves.
  import pathlib  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top,reimported,redefined-outer-name
  import numpy as np  # pylint: disable=g-import-not-at-top,reimported,redefined-outer-name

  export_dir = pathlib.Path(export_dir)
  exported = jax.export.deserialize(bytearray((export_dir / "forward.jax").read_bytes()))
  with np.load(export_dir / "weights.npz") as npz:
    # Keys are "<argument index>.<name>", the index zero-padded: sorted is argument order.
    weights = [jax.device_put(npz[key]) for key in sorted(npz.files)]
  call = jax.jit(exported.call)
  return lambda images: call(weights, images)


# --------------------------------------------------------------------------- the run


def _spec(dataset: str):
  """The dataset's class count and image shape, without reading it (``get_info`` would)."""
  return input_pipeline._spec(dataset)  # pylint: disable=protected-access


def restore(workdir: str | os.PathLike) -> tuple[dict[str, Any], int, nnx.Module]:
  """``(config, step, model)`` of a ``train.main`` workdir: its saved config (a dict), the
  latest checkpoint's step and the model holding that checkpoint's params and BatchNorm
  statistics, in eval mode.

  Raises:
    FileNotFoundError: no such workdir, no ``config.json`` in it, or no checkpoint.
    ValueError: a config without a model or dataset, an unknown model or dataset, or a
      checkpoint that does not hold the config's model.
  """
  workdir = Path(workdir).resolve()  # orbax reads absolute paths only
  if not workdir.is_dir():
    raise FileNotFoundError(f"Workdir {workdir} does not exist.")
  config_path = workdir / "config.json"
  if not config_path.is_file():
    raise FileNotFoundError(f"No config.json in {workdir}: not a workdir of train.main, which "
                            "saves the run's config there.")
  config = json.loads(config_path.read_text())
  for key in ("model", "dataset"):
    if key not in config:
      raise ValueError(f"{config_path} has no {key!r}.")
  if config["model"] not in models.MODELS:
    raise ValueError(f"Unknown model {config['model']!r} in {config_path}; valid names: "
                     f"{', '.join(sorted(models.MODELS))}.")
  spec = _spec(config["dataset"])  # ValueError for an unknown dataset

  checkpoints = workdir / "checkpoints"
  if not checkpoints.is_dir():
    raise FileNotFoundError(f"No checkpoint in {workdir}: no checkpoints/ folder.")
  with ocp.CheckpointManager(checkpoints) as manager:
    step = manager.latest_step()
    if step is None:
      raise FileNotFoundError(f"No checkpoint in {checkpoints}: train the run first "
                              "(python -m train.main), or pass its workdir.")
    return config, int(step), _restore_model(manager, step, config, spec, config_path)


def _restore_model(manager: ocp.CheckpointManager, step: int, config: dict[str, Any], spec,
                   config_path: Path) -> nnx.Module:
  """The config's model, in eval mode, holding the checkpoint's params and statistics."""
  abstract = nnx.eval_shape(lambda: models.get_model(
      config["model"], spec.num_classes, input_shape=tuple(spec.image_shape),
      init=config.get("init", "normal"), init_scale=config.get("init_scale", 1.0),
      rngs=nnx.Rngs(0)))
  abstract.eval()
  graphdef, params, batch_stats = nnx.split(abstract, nnx.Param, nnx.BatchStat)
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  target = jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device),
      {"params": nnx.to_pure_dict(params), "batch_stats": nnx.to_pure_dict(batch_stats)})
  what = f"a {config['model']} for {config['dataset']}, as {config_path} says"
  try:
    # The optimizer state stays on disk: inference does not need it.
    restored = manager.restore(step, args=ocp.args.PyTreeRestore(
        target, restore_args=ocp.checkpoint_utils.construct_restore_args(target),
        partial_restore=True))
  except (ValueError, KeyError, TypeError) as e:
    raise ValueError(f"The checkpoint of step {step} in {manager.directory} does not hold "
                     f"{what}: {e}") from e
  mismatched = [f"{jax.tree_util.keystr(path)} {x.shape} (model: {t.shape})"
                for (path, x), t in zip(jax.tree_util.tree_leaves_with_path(restored),
                                        jax.tree.leaves(target))
                if x.shape != t.shape]
  if jax.tree.structure(restored) != jax.tree.structure(target) or mismatched:
    raise ValueError(f"The checkpoint of step {step} in {manager.directory} does not hold "
                     f"{what}: {', '.join(mismatched) or 'other leaves'}.")
  return nnx.merge(graphdef, restored["params"], restored["batch_stats"])


# --------------------------------------------------------------------------- sparse layers


class _Indices(nnx.Variable):
  """A BCOO's indices: part of a layer's weights, not a parameter."""


def _bcoo(data: jax.Array, indices: jax.Array, shape: tuple[int, ...]) -> sparse.BCOO:
  return sparse.BCOO((data, indices), shape=shape, indices_sorted=True, unique_indices=True)


def _add_bias(y: jax.Array, bias: nnx.Param | None) -> jax.Array:
  if bias is None:
    return y
  bias = bias.get_value()
  return y + bias.reshape((1,) * (y.ndim - 1) + bias.shape)  # no implicit rank promotion


class SparseLinear(nnx.Module):
  """An ``nnx.Linear`` whose kernel is stored as a BCOO: ``x @ kernel + bias``."""

  def __init__(self, linear: nnx.Linear, kernel: sparse.BCOO):
    self.kernel_shape = tuple(kernel.shape)
    self.data = nnx.Param(kernel.data)
    self.indices = _Indices(kernel.indices)
    self.bias = nnx.Param(linear.bias.get_value()) if linear.use_bias else None

  def __call__(self, x: jax.Array) -> jax.Array:
    kernel = _bcoo(self.data.get_value(), self.indices.get_value(), self.kernel_shape)
    return _add_bias(so.compact_matmul(x, kernel), self.bias)


class SparseConv(nnx.Module):
  """A 2-D ``nnx.Conv`` (NHWC, HWIO) whose kernel is stored as a BCOO.

  ``mode="densify"`` scatters the dense kernel back at each call and convolves as
  ``nnx.Conv`` does: compact at rest, dense FLOPs. ``mode="im2col"`` multiplies the input's
  patches by the BCOO of shape ``(in · kh · kw, out)``: only non-zero weights are multiplied.
  """

  def __init__(self, conv: nnx.Conv, kernel: sparse.BCOO, mode: str):
    self.mode = mode
    self.kernel_shape = tuple(conv.kernel.get_value().shape)
    self.bcoo_shape = tuple(kernel.shape)
    self.data = nnx.Param(kernel.data)
    self.indices = _Indices(kernel.indices)
    self.bias = nnx.Param(conv.bias.get_value()) if conv.use_bias else None
    rank = len(conv.kernel_size)
    self.kernel_size = tuple(conv.kernel_size)
    self.strides = _broadcast(conv.strides, rank)
    self.padding = nnx_linear.canonicalize_padding(conv.padding, rank)
    if not isinstance(self.padding, str):
      self.padding = tuple(tuple(pair) for pair in self.padding)
    self.input_dilation = _broadcast(conv.input_dilation, rank)
    self.kernel_dilation = _broadcast(conv.kernel_dilation, rank)
    self.feature_group_count = conv.feature_group_count
    self.precision = conv.precision

  def __call__(self, x: jax.Array) -> jax.Array:
    kernel = _bcoo(self.data.get_value(), self.indices.get_value(), self.bcoo_shape)
    if self.mode == "im2col":
      # An identity filter copies each patch exactly; HIGHEST keeps the copy exact on GPUs.
      patches = jax.lax.conv_general_dilated_patches(
          x, self.kernel_size, self.strides, self.padding,
          dimension_numbers=("NHWC", "OIHW", "NHWC"), precision=jax.lax.Precision.HIGHEST)
      y = so.compact_matmul(patches, kernel)
    else:
      y = jax.lax.conv_general_dilated(
          x, so.from_compact(kernel), self.strides, self.padding,
          lhs_dilation=self.input_dilation, rhs_dilation=self.kernel_dilation,
          dimension_numbers=("NHWC", "HWIO", "NHWC"),
          feature_group_count=self.feature_group_count, precision=self.precision)
    return _add_bias(y, self.bias)


def _broadcast(value: int | Sequence[int] | None, rank: int) -> tuple[int, ...]:
  if value is None:
    return (1,) * rank
  if isinstance(value, int):
    return (value,) * rank
  return tuple(value)


def sparse_layer(module: nnx.Module, conv_mode: str) -> nnx.Module | None:
  """The ``SparseLinear`` or ``SparseConv`` of a Linear or Conv whose kernel is smaller as a
  BCOO (``conv_mode``: ``"densify"`` or ``"im2col"``); None for other modules and kernels."""
  if isinstance(module, nnx.Linear):
    kernel = so.to_compact(np.asarray(module.kernel.get_value()))
    return SparseLinear(module, kernel) if isinstance(kernel, sparse.BCOO) else None
  if not isinstance(module, nnx.Conv):
    return None
  kernel = np.asarray(module.kernel.get_value())
  padding = nnx_linear.canonicalize_padding(module.padding, len(module.kernel_size))
  if (kernel.ndim != 4 or module.mask is not None
      or padding in ("CIRCULAR", "REFLECT", "CAUSAL")):
    return None  # not a plain 2-D conv: it stays as it is
  if conv_mode == "im2col":
    if (module.feature_group_count != 1 or set(_broadcast(module.input_dilation, 2)) != {1}
        or set(_broadcast(module.kernel_dilation, 2)) != {1}):
      return None
    kh, kw, cin, cout = kernel.shape
    # conv_general_dilated_patches orders a patch's features (channel, row, column).
    kernel = kernel.transpose(2, 0, 1, 3).reshape(cin * kh * kw, cout)
  compact = so.to_compact(kernel)
  return SparseConv(module, compact, conv_mode) if isinstance(compact, sparse.BCOO) else None


def _module(model: nnx.Module, path: Path_) -> Any:
  for key in path:
    model = model[key] if isinstance(key, int) else getattr(model, key)
  return model


def _store_sparse(model: nnx.Module, conv_mode: str) -> None:
  """Replaces, in place, each Linear and Conv of ``model`` whose kernel is smaller as a BCOO."""
  for path, module in list(nnx.iter_modules(model)):
    new = sparse_layer(module, conv_mode)
    if new is None:
      continue
    parent, key = _module(model, path[:-1]), path[-1]
    if isinstance(key, int):
      parent[key] = new
    else:
      setattr(parent, key, new)


# --------------------------------------------------------------------------- export


def _key_name(key: Any) -> str:
  for attr in ("key", "name", "idx"):
    if hasattr(key, attr):
      return str(getattr(key, attr))
  return str(key)


def _forward(model: nnx.Module) -> tuple[Callable, list[str], list[np.ndarray]]:
  """``(forward(weights, images), names, weights)``: the eval-mode forward pass of ``model``
  with every variable an argument."""
  graphdef, state = nnx.split(model)
  leaves, treedef = jax.tree_util.tree_flatten_with_path(state)
  names = [".".join(_key_name(k) for k in path if _key_name(k) != "value") for path, _ in leaves]
  weights = [np.asarray(leaf) for _, leaf in leaves]

  def forward(weights, images):
    return nnx.merge(graphdef, jax.tree.unflatten(treedef, weights))(images)

  return forward, names, weights


def _export(forward: Callable, weights: Sequence[np.ndarray], input_shape: Sequence[int],
            platforms: Sequence[str]) -> jax.export.Exported:
  specs = [jax.ShapeDtypeStruct(w.shape, w.dtype) for w in weights]
  images = jax.ShapeDtypeStruct(
      jax.export.symbolic_shape("b, " + ", ".join(map(str, input_shape))), jnp.float32)
  return jax.export.export(jax.jit(forward), platforms=tuple(platforms))(specs, images)


def _write(export_dir: Path, exported: jax.export.Exported, names: Sequence[str],
           weights: Sequence[np.ndarray]) -> dict[str, int]:
  export_dir.mkdir(parents=True, exist_ok=True)
  (export_dir / FORWARD_FILE).write_bytes(exported.serialize())
  width = len(str(len(weights)))
  # Uncompressed: loads without a copy, and its size is the compact form's.
  np.savez(export_dir / WEIGHTS_FILE,
           **{f"{i:0{width}d}.{name}": w for i, (name, w) in enumerate(zip(names, weights))})
  return {name: (export_dir / name).stat().st_size for name in (FORWARD_FILE, WEIGHTS_FILE)}


# --------------------------------------------------------------------------- measurements


def _positions(model: nnx.Module, input_shape: Sequence[int]) -> dict[Path_, int]:
  """Output positions (H × W; 1 for a linear layer) of each module's call, per example."""
  graphdef, state = nnx.split(model)

  def outputs(state, images):
    module = nnx.merge(graphdef, state)
    return nnx.capture(module, nnx.Intermediate, method_outputs=nnx.Intermediate)(images)[1]

  shapes = jax.eval_shape(outputs, state, jax.ShapeDtypeStruct((1, *input_shape), jnp.float32))
  positions = {}
  for path, var in nnx.to_flat_state(shapes):
    if path[-1] == "__call__":
      (out,) = var.get_value()
      positions[path[:-1]] = math.prod(out.shape[1:-1])
  return positions


def _layers(model: nnx.Module) -> dict[Path_, nnx.Module]:
  kinds = (nnx.Linear, nnx.Conv, SparseLinear, SparseConv)
  return {path: m for path, m in nnx.iter_modules(model) if isinstance(m, kinds)}


def _leaves(model: nnx.Module, *kinds: type) -> list[np.ndarray]:
  return [np.asarray(x) for x in jax.tree.leaves(nnx.state(model, *kinds))]


def _nbytes(arrays: Sequence[np.ndarray]) -> int:
  return int(sum(a.nbytes for a in arrays))


def _layer_rows(dense: nnx.Module, compact: nnx.Module, positions: dict[Path_, int],
                order: Sequence[str]) -> list[dict[str, Any]]:
  """What was done to each conv and linear layer, with its bytes and FLOPs, in forward order."""
  dense_layers, compact_layers = _layers(dense), _layers(compact)
  rows = []
  for path, before in dense_layers.items():
    after = compact_layers[path]
    kernel = np.asarray(before.kernel.get_value())
    kind = "conv" if isinstance(before, nnx.Conv) else "linear"
    if isinstance(after, (SparseLinear, SparseConv)):
      shape, stored = after.kernel_shape, "bcoo"
      nonzeros = int(after.data.get_value().size)
      compact_bytes = _nbytes([np.asarray(after.data.get_value()),
                               np.asarray(after.indices.get_value())])
      index_dtype = str(after.indices.get_value().dtype)
      if isinstance(after, SparseLinear):
        compute, macs = "bcoo_matmul", nonzeros
      elif after.mode == "im2col":
        compute, macs = "im2col_bcoo_matmul", nonzeros
      else:
        compute, macs = "densified_conv", math.prod(shape)
    else:
      after_kernel = np.asarray(after.kernel.get_value())
      shape, stored, compute = after_kernel.shape, "dense", "dense"
      nonzeros, compact_bytes = int(np.count_nonzero(after_kernel)), int(after_kernel.nbytes)
      index_dtype, macs = None, after_kernel.size
    thinned = tuple(shape) != kernel.shape
    how = "+".join((["thinned"] if thinned else []) + [stored])
    if stored == "bcoo" and kind == "conv":
      how += "(im2col)" if compute.startswith("im2col") else "(densified per call)"
    rows.append({
        "name": ".".join(map(str, path)), "kind": kind, "how": how, "thinned": thinned,
        "stored": stored, "compute": compute,
        "kernel_before": list(kernel.shape), "kernel_after": list(shape),
        "nonzeros": nonzeros, "index_dtype": index_dtype,
        "dense_bytes": int(kernel.nbytes), "compact_bytes": compact_bytes,
        "flops_dense": positions[path] * kernel.size, "flops_compact": positions[path] * macs,
    })
  rank = {name: i for i, name in enumerate(order)}
  return sorted(rows, key=lambda row: rank.get(row["name"], len(rank)))


def _latency_ms(fns: dict[str, Callable], input_shape: Sequence[int], calls: int,
                max_seconds: float = 20.0) -> dict[str, dict[str, float]]:
  """Median wall time of ``fn(images)`` per function and batch size, after two warm-up calls.

  The functions are called in turn, so that a change in the machine's load hits them alike.
  At least 3 calls each, up to ``calls`` or until ``max_seconds`` have passed.
  """
  out = {name: {} for name in fns}
  for batch in LATENCY_BATCHES:
    images = jax.random.normal(jax.random.key(0), (batch, *input_shape), jnp.float32)
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


def _evaluate(config: dict[str, Any], dense: Callable, compact: Callable) -> dict[str, Any]:
  """Test accuracy of both, the predictions that differ and the largest logit difference."""
  batches = input_pipeline.create_split(
      config["dataset"], config.get("eval_split") or "test", EVAL_BATCH, train=False,
      data_dir=config.get("data_dir"), drop_remainder=False)
  count = correct_dense = correct_compact = flipped = 0
  max_diff = 0.0
  for batch in batches:
    images, labels = batch["image"], batch["label"]
    n = len(labels)
    padded = np.zeros((EVAL_BATCH, *images.shape[1:]), np.float32)  # one compiled shape
    padded[:n] = images
    logits_dense = np.asarray(dense(padded))[:n]
    logits_compact = np.asarray(compact(padded))[:n]
    pred_dense, pred_compact = logits_dense.argmax(-1), logits_compact.argmax(-1)
    count += n
    correct_dense += int((pred_dense == labels).sum())
    correct_compact += int((pred_compact == labels).sum())
    flipped += int((pred_dense != pred_compact).sum())
    max_diff = max(max_diff, float(np.abs(logits_dense - logits_compact).max(initial=0.0)))
  if not count:
    raise ValueError(f"The {config['dataset']} split {config.get('eval_split')!r} is empty.")
  return {"test_examples": count, "test_accuracy": correct_compact / count,
          "test_accuracy_dense": correct_dense / count, "flipped_predictions": flipped,
          "max_abs_logit_difference": max_diff}


def _logged_accuracy(workdir: Path, step: int) -> float | None:
  """The test accuracy the training loop logged for ``step``, if it did."""
  path = workdir / "metrics.jsonl"
  if not path.is_file():
    return None
  for line in reversed(path.read_text().splitlines()):
    record = json.loads(line)
    if record.get("step") == step and "test_accuracy" in record:
      return record["test_accuracy"]
  return None


def _directory_bytes(path: Path) -> int:
  return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


# --------------------------------------------------------------------------- main


def export(workdir: str | os.PathLike, format: str = "auto", *,  # pylint: disable=redefined-builtin
           conv_mode: str = "densify", platforms: Sequence[str] = PLATFORMS,
           evaluate: bool = True, latency_calls: int = 20) -> dict[str, Any]:
  """Writes ``workdir/export/`` (module docstring) and returns its report.

  Args:
    workdir: a ``train.main`` workdir (``config.json`` and ``checkpoints/``).
    format: ``"auto"``, ``"thin"`` or ``"sparse"``.
    conv_mode: how a conv stored as a BCOO runs: ``"densify"`` or ``"im2col"``.
    platforms: what ``forward.jax`` is lowered for (jax.export platform names).
    evaluate: re-measure the test accuracy (reads the run's dataset, ``eval_split``).
    latency_calls: timed calls per model and batch size (fewer when they take long); 0: no
      latency measured.

  Returns:
    The report written to ``export/report.json``.

  Raises:
    ValueError: an unknown format or conv mode, or a bad run (see :func:`restore`).
    FileNotFoundError: a workdir that does not exist or has no config or checkpoint.
  """
  if format not in FORMATS:
    raise ValueError(f"Unknown format {format!r}; valid: {', '.join(FORMATS)}.")
  if conv_mode not in CONV_MODES:
    raise ValueError(f"Unknown conv_mode {conv_mode!r}; valid: {', '.join(CONV_MODES)}.")
  workdir = Path(workdir)
  config, step, dense = restore(workdir)
  input_shape = tuple(_spec(config["dataset"]).image_shape)

  thinned, thinning = models.thin(dense)
  compact = thinned if format in ("thin", "auto") else nnx.clone(dense)
  exported_params = _leaves(compact, nnx.Param)  # the architecture, before BCOO storage
  if format in ("sparse", "auto"):
    _store_sparse(compact, conv_mode)

  export_dir = workdir / EXPORT_DIR
  (export_dir / REPORT_FILE).unlink(missing_ok=True)  # a previous export's, until rewritten
  forward, names, weights = _forward(compact)
  files = _write(export_dir, _export(forward, weights, input_shape, platforms), names, weights)
  compact_fn = load(export_dir)
  # The dense model through the same path, for this machine only: the baseline.
  dense_forward, _, dense_weights = _forward(dense)
  dense_call = jax.jit(_export(dense_forward, dense_weights, input_shape,
                               (jax.default_backend(),)).call)
  dense_fn = lambda images: dense_call(dense_weights, images)

  positions = _positions(dense, input_shape)
  layers = _layer_rows(dense, compact, positions, [row.name for row in thinning.layers])
  dense_params = _leaves(dense, nnx.Param)
  compact_params = _leaves(compact, nnx.Param, _Indices)
  report = {
      "format": format,
      "conv_mode": conv_mode,
      "model": config["model"],
      "dataset": config["dataset"],
      "checkpoint_step": step,
      "platforms": list(platforms),
      "params_dense": int(sum(p.size for p in dense_params)),
      "params": int(sum(p.size for p in exported_params)),
      "nonzeros_dense": int(sum(np.count_nonzero(p) for p in dense_params)),
      "nonzeros": int(sum(np.count_nonzero(p) for p in exported_params)),
      "dense_bytes": _nbytes(dense_params),
      "compact_bytes": _nbytes(compact_params),
      "batch_stats_bytes": {"dense": _nbytes(_leaves(dense, nnx.BatchStat)),
                            "compact": _nbytes(_leaves(compact, nnx.BatchStat))},
      "artifact_bytes": sum(files.values()),
      "artifact_files": files,
      "checkpoint_bytes": _directory_bytes(workdir / "checkpoints" / str(step)),
      # Multiply-adds per example of the convs and linear layers.
      "flops": {"dense": sum(row["flops_dense"] for row in layers),
                "compact": sum(row["flops_compact"] for row in layers)},
      "machine": machine.describe(),
      "layers": layers,
  }
  if latency_calls:
    report["latency_ms"] = _latency_ms({"dense": dense_fn, "compact": compact_fn}, input_shape,
                                       latency_calls)
  if evaluate:
    report.update(_evaluate(config, dense_fn, compact_fn))
    report["logged_test_accuracy"] = _logged_accuracy(workdir, step)
  (export_dir / REPORT_FILE).write_text(json.dumps(report, indent=2) + "\n")
  return report


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


FLAGS = flags.FLAGS


def _define_flags() -> None:
  # Only when run as a program: importing this module must not claim flag names
  # (train.main defines --workdir too).
  flags.DEFINE_string("workdir", None, "The run's workdir (config.json and checkpoints/).")
  flags.DEFINE_enum("format", "auto", FORMATS, "thin, sparse, or auto (thin, then sparse).")
  flags.DEFINE_enum("conv_mode", "densify", CONV_MODES,
                    "How a conv stored as a BCOO runs: densified per call, or im2col x BCOO.")
  flags.DEFINE_list("platforms", list(PLATFORMS), "Platforms the artifact is lowered for.")
  flags.DEFINE_bool("evaluate", True, "Re-measure the test accuracy from the artifact.")
  flags.DEFINE_integer("latency_calls", 20, "Timed calls per model and batch size.")
  flags.mark_flags_as_required(["workdir"])


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Too many command-line arguments: {argv[1:]}")
  if not FLAGS["verbosity"].present:  # orbax logs every restore at INFO
    logging.set_verbosity(logging.WARNING)
  report = export(FLAGS.workdir, FLAGS.format, conv_mode=FLAGS.conv_mode,
                  platforms=FLAGS.platforms, evaluate=FLAGS.evaluate,
                  latency_calls=FLAGS.latency_calls)
  print(summary(report))
  print(f"Wrote {Path(FLAGS.workdir) / EXPORT_DIR}/")


if __name__ == "__main__":
  _define_flags()
  app.run(main)
