"""Tests of train/export.py: tiny checkpoints, written as train.py writes them with channels and
weights zeroed by hand, exported in each format and loaded with jax alone; outputs equal to the
model's, report fields consistent, bad workdirs refused."""

from __future__ import annotations

import inspect
import json
import math
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest
from flax import nnx

import models
from tests.test_prepare_data import IDX_NAMES, _write_idx
from train import export, input_pipeline, prepare_data

REPO = Path(__file__).resolve().parents[1]
ATOL = 1e-5
NUM_TEST = 20
INPUT_SHAPE = (28, 28, 1)  # MNIST for every family: tiny data, and VGG/ResNet take any size
FAMILIES = ("lenet300100_tiny", "lenet5_tiny", "vgg_tiny", "resnet_tiny")
LOGGED_ACCURACY = 0.125  # written to metrics.jsonl for the checkpoint's step
LENET5_RIGHT = 12  # test examples labelled with lenet5_tiny's prediction
# The formats of any run; "nm", for runs with config.nm_pattern, is tested in tests/test_nm_loop.py.
FORMATS = tuple(fmt for fmt in export.FORMATS if fmt != "nm")


def _model(name, seed=0):
  """An eval-mode model with random weights and BatchNorm statistics (logits that depend on the
  input), one dead channel or neuron per thinnable layer pair, and unstructured zeros."""
  model = nnx.eval_shape(lambda: models.get_model(name, 10, input_shape=INPUT_SHAPE,
                                                  rngs=nnx.Rngs(seed)))
  rng = np.random.default_rng(seed)
  values = {}
  for path, var in nnx.to_flat_state(nnx.state(model)):
    shape = var.get_value().shape
    values[path] = {"kernel": lambda: rng.uniform(-1, 1, shape) * np.sqrt(3 / np.prod(shape[:-1])),
                    "bias": lambda: 0.3 * rng.standard_normal(shape),
                    "scale": lambda: 1.0 + 0.3 * rng.standard_normal(shape),
                    "mean": lambda: 0.3 * rng.standard_normal(shape),
                    "var": lambda: rng.uniform(0.5, 2.0, shape)}[path[-1]]()

  def zero_channel(layer, channel, bn=None):
    """The channel outputs 0 after its BatchNorm and ReLU: thinning removes it exactly."""
    values[layer + ("kernel",)][..., channel] = 0.0
    if layer + ("bias",) in values:
      values[layer + ("bias",)][channel] = 0.0
    if bn is not None:
      values[bn + ("scale",)][channel] = 0.0
      values[bn + ("bias",)][channel] = -0.5  # relu(-0.5) = 0

  def unstructured(layer, density):
    kernel = values[layer + ("kernel",)]
    kernel *= rng.random(kernel.shape) < density

  if name == "lenet300100_tiny":
    zero_channel(("layers", 0), slice(0, 10))
    unstructured(("layers", 0), 0.2)
    unstructured(("layers", 1), 0.3)
  elif name == "lenet5_tiny":
    zero_channel(("conv1",), 1)
    zero_channel(("fc1",), slice(0, 8))
    unstructured(("conv2",), 0.2)
    unstructured(("fc1",), 0.2)
  elif name == "vgg_tiny":
    zero_channel(("stages", 0, 0, "conv"), 2, bn=("stages", 0, 0, "bn"))
    unstructured(("stages", 1, 0, "conv"), 0.2)
    unstructured(("classifier",), 0.3)
  else:
    zero_channel(("blocks", 0, "conv1"), 3, bn=("blocks", 0, "bn1"))
    unstructured(("blocks", 0, "conv2"), 0.2)  # its inputs thinned too
    unstructured(("blocks", 1, "conv1"), 0.2)  # strided
  flat = nnx.to_flat_state(nnx.state(model))
  for path, var in flat:
    var.set_value(jnp.asarray(values[path], jnp.float32))
  model.eval()
  return model


@nnx.jit
def _forward(model, x):
  return model(x)


def _write_run(workdir, model, data_dir, name, step=7):
  """A train.main workdir: config.json, and a checkpoint holding what train.py's state holds."""
  workdir = Path(workdir)
  workdir.mkdir(parents=True)
  config = {"model": name, "dataset": "mnist", "data_dir": str(data_dir), "eval_split": "test",
            "init": "normal", "init_scale": 1.0}
  (workdir / "config.json").write_text(json.dumps(config, indent=2))
  (workdir / "metrics.jsonl").write_text(
      json.dumps({"step": step, "test_accuracy": LOGGED_ACCURACY}) + "\n")
  _, params, batch_stats = nnx.split(model, nnx.Param, nnx.BatchStat)
  params, batch_stats = nnx.to_pure_dict(params), nnx.to_pure_dict(batch_stats)
  state = {"step": jnp.asarray(step, jnp.int32), "params": params, "batch_stats": batch_stats,
           "opt_state": optax.sgd(0.1, momentum=0.9).init(params)}
  manager = ocp.CheckpointManager(workdir / "checkpoints",
                                  options=ocp.CheckpointManagerOptions(create=True))
  manager.save(step, args=ocp.args.StandardSave(state))
  manager.wait_until_finished()
  manager.close()
  return workdir


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  """A prepared TFDS MNIST of 8 train and NUM_TEST test examples, on which lenet5_tiny's
  predictions are right for exactly LENET5_RIGHT test examples."""
  root = tmp_path_factory.mktemp("data")
  raw = root / "raw" / "mnist"
  raw.mkdir(parents=True)
  rng = np.random.default_rng(0)
  images = {split: rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
            for split, n in (("train", 8), ("test", NUM_TEST))}
  # As the input pipeline normalises MNIST.
  x = (images["test"][..., None] / 255.0 - 0.1307) / 0.3081
  predicted = np.asarray(_forward(_model("lenet5_tiny"), jnp.asarray(x, jnp.float32))).argmax(-1)
  right = np.arange(NUM_TEST) < LENET5_RIGHT
  labels = {"train": rng.integers(0, 10, 8),
            "test": np.where(right, predicted, (predicted + 1) % 10)}
  for split, (image_name, label_name) in IDX_NAMES.items():
    _write_idx(raw / image_name, images[split], compress=True)
    _write_idx(raw / label_name, labels[split], compress=True)
  prepare_data.prepare("mnist", root / "raw", root / "tfds")
  input_pipeline.clear_cache()
  yield root / "tfds"
  input_pipeline.clear_cache()


@pytest.fixture(scope="module")
def exports(tmp_path_factory, data_dir):
  """(family, format) -> (model, report, a copy of its export/ directory)."""
  out = {}
  for name in FAMILIES:
    model = _model(name)
    workdir = _write_run(tmp_path_factory.mktemp(name) / "run", model, data_dir, name)
    for fmt in FORMATS:
      # Latency timed for one format only: a fast test file matters more.
      report = export.export(workdir, fmt, platforms=("cpu",),
                             latency_calls=2 if fmt == "auto" else 0)
      copy = tmp_path_factory.mktemp(f"{name}_{fmt}")
      shutil.copytree(workdir / "export", copy, dirs_exist_ok=True)
      out[name, fmt] = (model, report, copy)
  return out


def _inputs(batch, seed=1):
  return jax.random.normal(jax.random.key(seed), (batch, *INPUT_SHAPE))


# ---------------------------------------------------------------------------------------------
# The artifact: exact outputs, any batch size.


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("name", FAMILIES)
def test_loaded_artifact_outputs_equal_the_models(exports, name, fmt):
  model, _, directory = exports[name, fmt]
  forward = export.load(directory)
  for batch in (1, 128):
    x = _inputs(batch)
    expected = _forward(model, x)
    assert float(jnp.std(expected)) > 1e-2  # the logits depend on the input
    got = forward(x)
    assert got.shape == (batch, 10)
    np.testing.assert_allclose(got, expected, atol=ATOL, rtol=0)


def test_artifact_loads_with_jax_alone(exports, tmp_path):
  """``load``'s source runs in a fresh interpreter where flax, the repository and the training
  stack cannot be imported."""
  blocked = ["flax", "models", "train", "sparse_optax", "orbax", "tensorflow", "optax"]
  script = tmp_path / "serve.py"
  script.write_text(textwrap.dedent(f"""\
      from __future__ import annotations
      import importlib.abc, sys
      class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
          if name.split(".")[0] in {blocked!r}:
            raise ImportError("blocked: " + name)
      sys.meta_path.insert(0, Block())
      sys.path = [p for p in sys.path if p not in ("", {str(REPO)!r})]
      import numpy as np
      """) + textwrap.dedent(inspect.getsource(export.load)) + textwrap.dedent("""\
      for directory in sys.argv[1:]:
        forward = load(directory)
        np.save(directory + "/out.npy", np.asarray(forward(np.load(sys.argv[1] + "/../x.npy"))))
      print(sorted(m for m in sys.modules if m.split(".")[0] in %r))
      """ % blocked))
  directories = []
  for fmt in FORMATS:
    directory = tmp_path / "run" / fmt
    shutil.copytree(exports["resnet_tiny", fmt][2], directory)
    directories.append(directory)
  x = np.asarray(_inputs(3))
  np.save(tmp_path / "run" / "x.npy", x)
  done = subprocess.run([sys.executable, str(script), *map(str, directories)], cwd=tmp_path,
                        capture_output=True, text=True, timeout=120)
  assert done.returncode == 0, done.stderr
  assert done.stdout.strip() == "[]"  # nothing of the blocked packages got imported
  expected = _forward(exports["resnet_tiny", "auto"][0], x)
  for directory in directories:
    np.testing.assert_allclose(np.load(directory / "out.npy"), expected, atol=ATOL, rtol=0)


def test_artifact_holds_what_inference_needs_and_nothing_else(exports):
  _, report, directory = exports["lenet5_tiny", "auto"]
  assert sorted(p.name for p in directory.iterdir()) == ["forward.jax", "report.json",
                                                         "weights.npz"]
  sizes = {name: (directory / name).stat().st_size for name in ("forward.jax", "weights.npz")}
  assert report["artifact_files"] == sizes
  assert report["artifact_bytes"] == sum(sizes.values())
  with np.load(directory / "weights.npz") as npz:
    weights = {key: npz[key] for key in npz.files}
  # BCOO layers hold data and narrow indices; no optimizer state, no dense copy of them.
  assert not any("opt" in key or ("kernel" in key and "fc1" in key) for key in weights)
  # fc1 is (128, 24): 128 needs int16 (BCOO's padding index is the size); conv2 fits int8.
  assert weights[next(k for k in weights if k.endswith("fc1.indices"))].dtype == np.int16
  assert weights[next(k for k in weights if k.endswith("conv2.indices"))].dtype == np.int8
  in_memory = sum(w.nbytes for w in weights.values())
  assert in_memory == report["compact_bytes"] + report["batch_stats_bytes"]["compact"]
  # Uncompressed npz: the weights plus a small header per array.
  assert in_memory < sizes["weights.npz"] < in_memory + 1024 * len(weights)


# ---------------------------------------------------------------------------------------------
# The report.


def _counts(model):
  params = [np.asarray(x) for x in jax.tree.leaves(nnx.state(model, nnx.Param))]
  return sum(p.size for p in params), sum(int(np.count_nonzero(p)) for p in params)


@pytest.mark.parametrize("name", FAMILIES)
def test_report_fields_are_consistent(exports, name):
  reports = {fmt: exports[name, fmt][1] for fmt in FORMATS}
  model = exports[name, "auto"][0]
  params, nonzeros = _counts(model)
  for fmt, report in reports.items():
    assert report["format"] == fmt and report["model"] == name
    assert report["checkpoint_step"] == 7
    assert report["params_dense"] == params and report["nonzeros_dense"] == nonzeros
    assert report["dense_bytes"] == 4 * params
    assert report["nonzeros"] <= report["params"] <= report["params_dense"]
    assert report["flops"]["compact"] <= report["flops"]["dense"]
    assert report["flops"]["dense"] == sum(row["flops_dense"] for row in report["layers"])
    # Exact formats: the artifact predicts as the dense model does.
    assert report["test_examples"] == NUM_TEST
    assert report["flipped_predictions"] == 0
    assert report["test_accuracy"] == report["test_accuracy_dense"]
    assert report["max_abs_logit_difference"] <= ATOL
    assert report["logged_test_accuracy"] == LOGGED_ACCURACY
    if fmt == "auto":
      for kind in ("dense", "compact"):
        assert set(report["latency_ms"][kind]) == {"batch_1", "batch_128"}
        assert all(ms > 0 for ms in report["latency_ms"][kind].values())
    else:
      assert "latency_ms" not in report  # latency_calls=0
    assert report["machine"]["jax"] == jax.__version__
    assert report["machine"]["cpu_count"] >= 1 and report["machine"]["platform"]
    assert json.loads((exports[name, fmt][2] / "report.json").read_text()) == report
  thin, sparse, auto = reports["thin"], reports["sparse"], reports["auto"]
  # thin: narrower, every array dense.
  assert thin["params"] < params
  assert thin["flops"]["compact"] < thin["flops"]["dense"]
  assert thin["compact_bytes"] == 4 * thin["params"]
  assert {row["stored"] for row in thin["layers"]} == {"dense"}
  assert any(row["thinned"] for row in thin["layers"])
  # sparse: the trained architecture, unstructured zeros as BCOO.
  assert sparse["params"] == params and sparse["nonzeros"] == nonzeros
  assert sparse["compact_bytes"] < sparse["dense_bytes"]
  assert not any(row["thinned"] for row in sparse["layers"])
  assert "bcoo" in {row["stored"] for row in sparse["layers"]}
  # auto: both, smaller than either.
  assert auto["params"] == thin["params"]
  assert auto["compact_bytes"] < min(thin["compact_bytes"], sparse["compact_bytes"])
  assert auto["flops"]["compact"] <= thin["flops"]["compact"]
  assert any(row["thinned"] and row["stored"] == "bcoo" for row in auto["layers"])


@pytest.fixture(scope="module")
def lenet5_reports(exports):
  return {fmt: exports["lenet5_tiny", fmt][1] for fmt in FORMATS}


def test_layer_rows_of_lenet5_by_hand(lenet5_reports, exports):
  """conv1 4 -> 3 channels (one dead), fc1 32 -> 24 neurons (8 dead), counted by hand."""
  model = exports["lenet5_tiny", "auto"][0]
  conv2 = np.asarray(model.conv2.kernel.get_value())
  fc1 = np.asarray(model.fc1.kernel.get_value())
  # Output positions per example: conv1 24×24, conv2 8×8; linear layers 1.
  dense_flops = {"conv1": 24 * 24 * 25 * 4, "conv2": 8 * 8 * 25 * 4 * 8, "fc1": 128 * 32,
                 "fc2": 32 * 10}
  for fmt, report in lenet5_reports.items():
    rows = {row["name"]: row for row in report["layers"]}
    assert list(rows) == ["conv1", "conv2", "fc1", "fc2"]  # forward order
    assert {k: row["flops_dense"] for k, row in rows.items()} == dense_flops
    assert report["flops"]["dense"] == sum(dense_flops.values())
  thin = {row["name"]: row for row in lenet5_reports["thin"]["layers"]}
  assert thin["conv1"]["kernel_after"] == [5, 5, 1, 3] and thin["conv1"]["how"] == "thinned+dense"
  assert thin["conv2"]["kernel_after"] == [5, 5, 3, 8]
  assert thin["fc1"]["kernel_after"] == [128, 24] and thin["fc2"]["kernel_after"] == [24, 10]
  assert thin["conv2"]["flops_compact"] == 8 * 8 * 25 * 3 * 8
  sparse = {row["name"]: row for row in lenet5_reports["sparse"]["layers"]}
  assert sparse["fc1"]["how"] == "bcoo" and sparse["fc1"]["compute"] == "bcoo_matmul"
  assert sparse["fc1"]["nonzeros"] == np.count_nonzero(fc1)
  assert sparse["fc1"]["flops_compact"] == np.count_nonzero(fc1)
  assert sparse["fc1"]["compact_bytes"] == np.count_nonzero(fc1) * (4 + 2 * 2)  # int16 indices
  assert sparse["fc1"]["index_dtype"] == "int16" and sparse["conv2"]["index_dtype"] == "int8"
  # The default conv mode: stored sparse, densified at each call, dense FLOPs.
  assert sparse["conv2"]["how"] == "bcoo(densified per call)"
  assert sparse["conv2"]["compact_bytes"] == np.count_nonzero(conv2) * (4 + 4 * 1)
  assert sparse["conv2"]["flops_compact"] == sparse["conv2"]["flops_dense"]
  auto = {row["name"]: row for row in lenet5_reports["auto"]["layers"]}
  assert auto["fc1"]["how"] == "thinned+bcoo"
  assert auto["fc1"]["nonzeros"] == np.count_nonzero(fc1)  # the dead neurons held only zeros
  assert auto["conv1"]["how"] == "thinned+dense"  # 3 channels of 25 weights: dense is smaller
  report = lenet5_reports["auto"]
  layer_bytes = sum(row["compact_bytes"] for row in report["layers"])
  biases = 3 + 8 + 24 + 10
  assert report["compact_bytes"] == layer_bytes + 4 * biases


def test_compact_bytes_of_sparse_format_match_compact_summary(exports):
  """sparse stores each kernel as so.to_compact does, every other array dense."""
  import sparse_optax as so
  model, report, _ = exports["vgg_tiny", "sparse"]
  params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
  kernels = jax.tree_util.tree_map_with_path(
      lambda path, x: x if path[-1].key == "kernel" else None, params)
  others = [x for path, x in jax.tree_util.tree_leaves_with_path(params)
            if path[-1].key != "kernel"]
  expected = so.compact_summary(kernels)["compact_bytes"] + sum(x.nbytes for x in others)
  assert report["compact_bytes"] == expected < report["dense_bytes"]


def test_test_accuracy_is_that_of_the_model_on_the_test_split(exports):
  for fmt in FORMATS:
    report = exports["lenet5_tiny", fmt][1]
    assert report["test_accuracy_dense"] == report["test_accuracy"] == LENET5_RIGHT / NUM_TEST


# ---------------------------------------------------------------------------------------------
# im2col convs, the command line, errors.


@pytest.mark.parametrize("name", ["lenet5_tiny", "resnet_tiny"])  # VALID; strided and padded
def test_im2col_convs_are_exact_and_count_only_nonzero_flops(exports, tmp_path, data_dir, name):
  model = exports[name, "auto"][0]
  workdir = _write_run(tmp_path / "run", model, data_dir, name)
  report = export.export(workdir, "sparse", conv_mode="im2col", platforms=("cpu",),
                         latency_calls=0, evaluate=False)
  assert "test_accuracy" not in report
  convs = [row for row in report["layers"] if row["kind"] == "conv" and row["stored"] == "bcoo"]
  assert convs
  for row in convs:
    assert row["how"] == "bcoo(im2col)" and row["compute"] == "im2col_bcoo_matmul"
    # positions × non-zeros, against positions × kernel size
    assert row["flops_compact"] * math.prod(row["kernel_before"]) \
        == row["flops_dense"] * row["nonzeros"]
    assert row["flops_compact"] < row["flops_dense"]
  forward = export.load(workdir / "export")
  x = _inputs(4)
  np.testing.assert_allclose(forward(x), _forward(model, x), atol=ATOL, rtol=0)


def test_command_line(exports, tmp_path, data_dir):
  workdir = _write_run(tmp_path / "run", exports["lenet300100_tiny", "auto"][0], data_dir,
                       "lenet300100_tiny")
  done = subprocess.run(
      # A relative workdir: orbax itself takes absolute paths only.
      [sys.executable, "-m", "train.export", f"--workdir={os.path.relpath(workdir, REPO)}",
       "--format=thin", "--platforms=cpu", "--latency_calls=0", "--noevaluate"],
      cwd=REPO, capture_output=True, text=True, timeout=300)
  assert done.returncode == 0, done.stderr
  report = json.loads((workdir / "export" / "report.json").read_text())
  assert report["format"] == "thin" and report["platforms"] == ["cpu"]
  assert "lenet300100_tiny (thin)" in done.stdout and f"{report['params']:,} params" in done.stdout
  assert "latency_ms" not in report and "test_accuracy" not in report
  model, x = exports["lenet300100_tiny", "auto"][0], _inputs(2)
  np.testing.assert_allclose(export.load(workdir / "export")(x), _forward(model, x), atol=ATOL,
                             rtol=0)


def test_bad_workdirs(tmp_path, data_dir, exports):
  with pytest.raises(FileNotFoundError, match="does not exist"):
    export.export(tmp_path / "missing")
  with pytest.raises(FileNotFoundError, match="No config.json"):
    export.export(tmp_path)
  no_checkpoint = tmp_path / "no_checkpoint"
  no_checkpoint.mkdir()
  (no_checkpoint / "config.json").write_text(json.dumps({"model": "lenet5", "dataset": "mnist"}))
  with pytest.raises(FileNotFoundError, match="No checkpoint"):
    export.export(no_checkpoint)
  (no_checkpoint / "checkpoints").mkdir()
  with pytest.raises(FileNotFoundError, match="No checkpoint"):
    export.export(no_checkpoint)

  model = exports["lenet5_tiny", "auto"][0]
  run = _write_run(tmp_path / "run", model, data_dir, "lenet5_tiny")
  config = json.loads((run / "config.json").read_text())
  for changes, match in [({"model": "lenet7"}, "Unknown model 'lenet7'"),
                         ({"dataset": "svhn"}, "unknown dataset 'svhn'"),
                         ({"model": "lenet5"}, "does not hold a lenet5"),
                         ({"model": None}, "Unknown model None")]:
    (run / "config.json").write_text(json.dumps({**config, **changes}))
    with pytest.raises(ValueError, match=match):
      export.export(run)
  (run / "config.json").write_text(json.dumps({"dataset": "mnist"}))
  with pytest.raises(ValueError, match="has no 'model'"):
    export.export(run)
  (run / "config.json").write_text(json.dumps(config))
  with pytest.raises(ValueError, match="Unknown format 'dense'"):
    export.export(run, "dense")
  with pytest.raises(ValueError, match="Unknown conv_mode"):
    export.export(run, conv_mode="fft")
  assert not (run / "export").exists()  # nothing written for a refused export
