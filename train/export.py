r"""Exports a trained run for inference: ``python -m train.export --workdir=DIR [--format=auto]``.

Reads the run's latest checkpoint (params and BatchNorm statistics, not the optimizer state)
and its config (``train.run_folder``), makes the model compact and writes ``DIR/export/``:

* ``forward.jax``: the eval-mode forward pass ``logits = f(weights, images)``, serialized with
  ``jax.export`` (StableHLO) for any batch size (a symbolic batch dimension), lowered for CPU
  and CUDA (``--platforms``);
* ``weights.npz``: its weights in argument order, BCOO layers as their data and indices;
* ``report.json``: parameters, non-zeros, bytes in memory and on disk, FLOPs and latency
  dense against compact, the test accuracy re-measured from the artifact
  (``train.export_report`` measures them), and the attention heads that thinning removed.

Loading needs only jax and numpy, no flax and none of this repository: see :func:`load`.

Formats (``--format``):

* ``thin``: structured thinning (``models.thin``): the narrower model of the same family,
  without the channels and neurons whose removal leaves the outputs unchanged; all dense.
* ``sparse``: the trained architecture; each conv and linear kernel stored as a BCOO where
  that is smaller (``sparse_optax.to_compact``; the layers are ``models.sparse_layers``).
* ``auto``: ``thin``, then the zeros left (unstructured ones) stored as in ``sparse``.
* ``nm``: for a run trained with ``config.nm_pattern`` ("N:M"): the trained architecture, each
  linear, HWIO conv and attention projection kernel that holds the pattern stored as its values
  and their positions within each group of M (``models.sparse_layers.NMLinear``, ``NMConv``,
  ``NMLinearGeneral``; ``uint8`` positions), rebuilt dense at each call; the kernels
  ``train.methods.nm_pattern_axes`` leaves out stay dense.

A run trained with ``config.nm_pattern`` has the pattern checked on every leaf it applies to
(``train.methods.nm_pattern_axes``, as the optimizer read them) before any format is written:
a leaf that breaks it is an error naming it.

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
import os
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags, logging
from etils import epath
from flax import nnx

import models
from models import sparse_layers
from train import export_report, input_pipeline, machine, run_folder

FORMATS = ("auto", "thin", "sparse", "nm")
CONV_MODES = sparse_layers.CONV_MODES
PLATFORMS = ("cpu", "cuda")
FORWARD_FILE = "forward.jax"
WEIGHTS_FILE = "weights.npz"
REPORT_FILE = "report.json"


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
            platforms: Sequence[str], dtype: Any = jnp.float32) -> jax.export.Exported:
  specs = [jax.ShapeDtypeStruct(w.shape, w.dtype) for w in weights]
  images = jax.ShapeDtypeStruct(
      jax.export.symbolic_shape("b, " + ", ".join(map(str, input_shape))), dtype)
  return jax.export.export(jax.jit(forward), platforms=tuple(platforms))(specs, images)


def _write(export_dir: epath.Path, exported: jax.export.Exported, names: Sequence[str],
           weights: Sequence[np.ndarray]) -> dict[str, int]:
  export_dir.mkdir(parents=True, exist_ok=True)
  (export_dir / FORWARD_FILE).write_bytes(exported.serialize())
  width = len(str(len(weights)))
  # Uncompressed: loads without a copy, and its size is the compact form's.
  np.savez(export_dir / WEIGHTS_FILE,
           **{f"{i:0{width}d}.{name}": w for i, (name, w) in enumerate(zip(names, weights))})
  return {name: (export_dir / name).stat().length for name in (FORWARD_FILE, WEIGHTS_FILE)}


# --------------------------------------------------------------------------- N:M


def nm_axes(model_name: str, pattern: str, model: nnx.Module) -> dict[tuple[Any, ...], Any]:
  """Per module path, the input axes of its kernel under ``pattern``, as the training loop
  read them (``train.methods.nm_pattern_axes`` with the model's penalty mask)."""
  from train import methods  # pylint: disable=g-import-not-at-top
  params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
  axes = methods.nm_pattern_axes(pattern, models.penalty_mask(model_name))(params)
  out = {}
  for path, a in jax.tree_util.tree_flatten_with_path(
      axes, is_leaf=lambda x: x is None or isinstance(x, tuple))[0]:
    keys = tuple(getattr(k, "key", getattr(k, "idx", k)) for k in path)
    if a is not None and keys[-1] == "kernel":
      out[keys[:-1]] = a
  return out


def check_nm(model_name: str, pattern: str, model: nnx.Module) -> int:
  """Raises ``ValueError`` naming each leaf of ``model`` that breaks ``pattern``; returns the
  number of leaves checked."""
  import sparse_optax as so  # pylint: disable=g-import-not-at-top
  from train import methods  # pylint: disable=g-import-not-at-top
  params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
  axes = methods.nm_pattern_axes(pattern, models.penalty_mask(model_name))
  bad = so.nm_violations(params, pattern, axes=axes,
                         mask=models.penalty_mask(model_name))
  if bad:
    listed = ", ".join(f"{name} ({count} groups)" for name, count in bad.items())
    raise ValueError(f"The run declares config.nm_pattern={pattern!r}, but these leaves have "
                     f"more than N non-zeros in some group of M: {listed}. Refusing to export "
                     "a model that breaks its declared pattern.")
  return sum(a is not None for a in jax.tree.leaves(
      axes(params), is_leaf=lambda x: x is None or isinstance(x, tuple)))


# --------------------------------------------------------------------------- main


def export(workdir: str | os.PathLike, format: str = "auto", *,  # pylint: disable=redefined-builtin
           conv_mode: str = "densify", platforms: Sequence[str] = PLATFORMS,
           evaluate: bool = True, latency_calls: int = 20) -> dict[str, Any]:
  """Writes ``workdir/export/`` (module docstring) and returns its report.

  Args:
    workdir: a ``train.main`` workdir (``config.json`` and ``checkpoints/``).
    format: ``"auto"``, ``"thin"``, ``"sparse"`` or ``"nm"`` (a run with ``nm_pattern``).
    conv_mode: how a conv stored as a BCOO runs: ``"densify"`` or ``"im2col"``.
    platforms: what ``forward.jax`` is lowered for (jax.export platform names).
    evaluate: re-measure the test accuracy (reads the run's dataset, ``eval_split``).
    latency_calls: timed calls per model and batch size (fewer when they take long); 0: no
      latency measured.

  Returns:
    The report written to ``export/report.json``.

  Raises:
    ValueError: an unknown format or conv mode, a bad run (see ``train.run_folder.restore``),
      ``"nm"`` for a run without ``nm_pattern``, or a leaf that breaks the run's pattern.
    FileNotFoundError: a workdir that does not exist or has no config or checkpoint.
  """
  if format not in FORMATS:
    raise ValueError(f"Unknown format {format!r}; valid: {', '.join(FORMATS)}.")
  if conv_mode not in CONV_MODES:
    raise ValueError(f"Unknown conv_mode {conv_mode!r}; valid: {', '.join(CONV_MODES)}.")
  config, step, dense = run_folder.restore(workdir)
  input_shape = tuple(input_pipeline.spec(config["dataset"]).image_shape)

  pattern = config.get("nm_pattern")
  if format == "nm" and pattern is None:
    raise ValueError(f"format='nm' stores kernels that hold an N:M pattern, but {workdir} was "
                     "trained without one (config.nm_pattern is None).")
  nm_checked = None if pattern is None else check_nm(config["model"], pattern, dense)

  thinned, thinning = models.thin(dense)
  compact = thinned if format in ("thin", "auto") else nnx.clone(dense)
  exported_params = export_report.leaves(compact, nnx.Param)  # before BCOO storage
  if format in ("sparse", "auto"):
    sparse_layers.store_sparse(compact, conv_mode)
  if format == "nm":
    n_m = tuple(int(v) for v in pattern.split(":"))
    sparse_layers.store_nm(compact, n_m, nm_axes(config["model"], pattern, dense))

  export_dir = run_folder.export_dir(workdir)
  (export_dir / REPORT_FILE).unlink(missing_ok=True)  # a previous export's, until rewritten
  forward, names, weights = _forward(compact)
  dtype = export_report.input_dtype(config)  # (a language model takes int32 tokens)
  files = _write(export_dir, _export(forward, weights, input_shape, platforms, dtype), names,
                 weights)
  compact_fn = load(export_dir)
  # The dense model through the same path, for this machine only: the baseline.
  dense_forward, _, dense_weights = _forward(dense)
  dense_call = jax.jit(_export(dense_forward, dense_weights, input_shape,
                               (jax.default_backend(),), dtype).call)
  dense_fn = lambda images: dense_call(dense_weights, images)

  report = {
      "format": format,
      "nm_pattern": pattern,
      "nm_checked_leaves": nm_checked,
      "conv_mode": conv_mode,
      "model": config["model"],
      "dataset": config["dataset"],
      "checkpoint_step": step,
      # Attention layers' heads before and after, where the export thinned them.
      "heads": [{"name": a.name, "before": a.heads_before, "after": a.heads_after}
                for a in thinning.heads] if format in ("thin", "auto") else [],
      "platforms": list(platforms),
      "artifact_bytes": sum(files.values()),
      "artifact_files": files,
      "machine": machine.describe(),
      **export_report.measure(workdir, config, step, dense, compact, exported_params,
                              [row.name for row in thinning.layers], dense_fn, compact_fn,
                              evaluate_accuracy=evaluate, latency_calls=latency_calls),
  }
  (export_dir / REPORT_FILE).write_text(json.dumps(report, indent=2) + "\n")
  return report


FLAGS = flags.FLAGS


def _define_flags() -> None:
  # Only when run as a program: importing this module must not claim flag names
  # (train.main defines --workdir too).
  flags.DEFINE_string("workdir", None, "The run's workdir (config.json and checkpoints/).")
  flags.DEFINE_enum("format", "auto", FORMATS,
                    "thin, sparse, auto (thin, then sparse), or nm (N:M kernels compressed).")
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
  print(export_report.summary(report))
  print(f"Wrote {run_folder.export_dir(FLAGS.workdir)}/")


if __name__ == "__main__":
  _define_flags()
  app.run(main)
